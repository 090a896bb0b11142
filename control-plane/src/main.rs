fn main() -> std::process::ExitCode {
    weft_control::cli::main()
}
