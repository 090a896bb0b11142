//! What the agent runs for a container: the workspace binary its image stands for,
//! started inside the pod's network namespace, in a private mount namespace that
//! shows the pod's volumes at their mount paths, as the container's user.
//!
//! Images map to the binaries that the Dockerfile's stages install:
//!
//! | image | entrypoint | binaries the command may name |
//! |---|---|---|
//! | `weft/weft-control` | `weft-control` | `/usr/local/bin/weft-control`, `/usr/local/bin/weftctl` |
//! | `weft/weft-proxy`, `weft/weft-proxy-init` | `weft-proxy` | `/usr/local/bin/weft-proxy` |
//! | `weft/weft-examples` | none | `/usr/local/bin/{web,orders,payments,users,notifications,loadgen}` |
//!
//! Any other image cannot run here, and the pod fails saying so.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::{Container, Pod};

/// The image's PATH (Debian's default, as in the distroless and slim images).
pub const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The user of the distroless `nonroot` images.
const NONROOT: u32 = 65532;

/// A container resolved to a program: or why it cannot run here.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// The workspace binary's name (`weft-proxy`, `orders`...).
    pub binary: String,
    pub args: Vec<String>,
    pub uid: u32,
    pub gid: u32,
}

/// Why a container cannot start; `reason` is a CamelCase word, as the kubelet's.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

struct ImageKind {
    repo: &'static str,
    entrypoint: Option<&'static str>,
    binaries: &'static [&'static str],
    /// The image's USER.
    uid: u32,
}

const IMAGES: &[ImageKind] = &[
    ImageKind {
        repo: "weft/weft-control",
        entrypoint: Some("weft-control"),
        binaries: &["weft-control", "weftctl"],
        uid: NONROOT,
    },
    ImageKind {
        repo: "weft/weft-proxy",
        entrypoint: Some("weft-proxy"),
        binaries: &["weft-proxy"],
        uid: NONROOT,
    },
    ImageKind {
        repo: "weft/weft-proxy-init",
        entrypoint: Some("weft-proxy"),
        binaries: &["weft-proxy"],
        uid: 0,
    },
    ImageKind {
        repo: "weft/weft-examples",
        entrypoint: None,
        binaries: &[
            "web",
            "orders",
            "payments",
            "users",
            "notifications",
            "loadgen",
        ],
        uid: NONROOT,
    },
];

/// The repository part of an image reference: without `@digest` and `:tag`.
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    }
}

/// What `container` of `pod` runs, or why it cannot run on this node.
pub fn resolve(pod: &Pod, container: &Container) -> Result<Launch, Refusal> {
    let image = container.image.clone().unwrap_or_default();
    let repo = repository(&image);
    let Some(kind) = IMAGES.iter().find(|k| k.repo == repo) else {
        return Err(Refusal {
            reason: "ImageNotRunnable",
            message: format!(
                "image {image:?} has no binary on this test node (it runs only {})",
                IMAGES.iter().map(|k| k.repo).collect::<Vec<_>>().join(", ")
            ),
        });
    };
    let command = container.command.clone().unwrap_or_default();
    let (binary, mut args) = match command.split_first() {
        Some((first, rest)) => {
            let name = first.strip_prefix("/usr/local/bin/").unwrap_or_default();
            if !kind.binaries.contains(&name) {
                return Err(Refusal {
                    reason: "CommandNotFound",
                    message: format!(
                        "image {image:?} has no {first:?} (it has /usr/local/bin/{{{}}})",
                        kind.binaries.join(",")
                    ),
                });
            }
            (name.to_string(), rest.to_vec())
        }
        None => match kind.entrypoint {
            Some(entry) => (entry.to_string(), Vec::new()),
            None => {
                return Err(Refusal {
                    reason: "NoCommand",
                    message: format!("image {image:?} has no entrypoint: set the command"),
                });
            }
        },
    };
    args.extend(container.args.clone().unwrap_or_default());
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user))
        .map_or(kind.uid, |u| u32::try_from(u).unwrap_or(NONROOT));
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group))
        .map_or(uid, |g| u32::try_from(g).unwrap_or(NONROOT));
    Ok(Launch {
        binary,
        args,
        uid,
        gid,
    })
}

/// The pod's supplementary groups: `fsGroup` and `supplementalGroups`.
pub fn groups(pod: &Pod) -> Vec<u32> {
    let Some(sc) = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()) else {
        return Vec::new();
    };
    let set: BTreeSet<u32> = sc
        .fs_group
        .into_iter()
        .chain(sc.supplemental_groups.iter().flatten().copied())
        .filter_map(|g| u32::try_from(g).ok())
        .collect();
    set.into_iter().collect()
}

/// A path bound into the container: `source` on the host at `target`.
#[derive(Debug, Clone)]
pub struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// Quotes `s` for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The longest existing ancestor of `target` (symlinks resolved), and whether
/// `target` itself exists.
fn existing_ancestor(target: &Path) -> (PathBuf, bool) {
    let mut at = target;
    loop {
        if let Ok(real) = at.canonicalize() {
            return (real, at == target);
        }
        match at.parent() {
            Some(parent) => at = parent,
            None => return (PathBuf::from("/"), false),
        }
    }
}

/// The shell script that sets up the container's mount namespace and becomes the
/// program. A mount path that does not exist on the host is made inside an
/// overlay of its nearest existing folder, so the host's file system is never
/// written to. Runs under `ip netns exec`, which already gave it a mount namespace
/// of its own (mounts made here never reach the host).
pub fn script(
    launch: &Launch,
    program: &Path,
    groups: &[u32],
    mounts: &[Mount],
    scratch: &Path,
) -> String {
    let mut s = String::from("set -eu\n");
    let mut overlaid = BTreeSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let (ancestor, exists) = existing_ancestor(Path::new(&m.target));
        if !exists && overlaid.insert(ancestor.clone()) {
            let upper = scratch.join(format!("overlay-{i}/upper"));
            let work = scratch.join(format!("overlay-{i}/work"));
            let a = quote(&ancestor.to_string_lossy());
            let _ = writeln!(
                s,
                "mkdir -p {u} {w}\nmount -t overlay overlay -o lowerdir={a0},upperdir={u0},workdir={w0} {a}",
                u = quote(&upper.to_string_lossy()),
                w = quote(&work.to_string_lossy()),
                a0 = ancestor.display(),
                u0 = upper.display(),
                w0 = work.display(),
            );
        }
        let src = quote(&m.source.to_string_lossy());
        let dst = quote(&m.target);
        if m.source.is_dir() {
            let _ = writeln!(s, "mkdir -p {dst}");
        } else {
            let _ = writeln!(
                s,
                "[ -e {dst} ] || {{ mkdir -p \"$(dirname {dst})\"; : > {dst}; }}"
            );
        }
        let _ = writeln!(s, "mount --bind {src} {dst}");
        if m.read_only {
            let _ = writeln!(s, "mount -o remount,bind,ro {dst}");
        }
    }
    let groups = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!(
            "--groups {}",
            groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    // The image's working directory, and none of the shell's own variables.
    s.push_str("cd /\nunset PWD OLDPWD\n");
    let _ = write!(
        s,
        "exec setpriv --reuid {} --regid {} {groups} --pdeathsig KILL -- {}",
        launch.uid,
        launch.gid,
        quote(&program.to_string_lossy())
    );
    for a in &launch.args {
        let _ = write!(s, " {}", quote(a));
    }
    s.push('\n');
    s
}

/// `sh script` inside `netns` with exactly `env` (plus nothing of the test's own).
pub fn command(netns: &str, script_file: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "KILL", "ip", "netns", "exec", netns, "sh"])
        .arg(script_file)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)));
    if !env.iter().any(|(k, _)| k == "PATH") {
        cmd.env("PATH", IMAGE_PATH);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: serde_json::Value, sc: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "n"},
            "spec": {"containers": containers, "securityContext": sc}
        }))
        .expect("a pod")
    }

    fn first(pod: &Pod) -> Container {
        pod.spec.as_ref().expect("spec").containers[0].clone()
    }

    #[test]
    fn example_image_runs_the_binary_its_command_names_as_the_pods_user() {
        let p = pod(
            json!([{"name": "orders", "image": "weft/weft-examples:0.1.0",
                    "command": ["/usr/local/bin/orders"], "args": ["--x"]}]),
            json!({"runAsUser": 65532, "runAsGroup": 65533, "fsGroup": 7102}),
        );
        let launch = resolve(&p, &first(&p)).expect("runnable");
        assert_eq!(launch.binary, "orders");
        assert_eq!(launch.args, vec!["--x".to_string()]);
        assert_eq!((launch.uid, launch.gid), (65532, 65533));
        assert_eq!(groups(&p), vec![7102]);
    }

    #[test]
    fn proxy_images_default_to_their_entrypoint_and_user() {
        let p = pod(
            json!([{"name": "i", "image": "weft/weft-proxy-init:0.1.0", "args": ["init"]},
                   {"name": "p", "image": "weft/weft-proxy@sha256:abc", "args": ["run"]}]),
            json!({}),
        );
        let spec = p.spec.clone().expect("spec");
        let init = resolve(&p, &spec.containers[0]).expect("runnable");
        assert_eq!((init.binary.as_str(), init.uid), ("weft-proxy", 0));
        let proxy = resolve(&p, &spec.containers[1]).expect("runnable");
        assert_eq!((proxy.binary.as_str(), proxy.uid), ("weft-proxy", NONROOT));
    }

    #[test]
    fn foreign_images_and_unknown_commands_are_refused_with_a_reason() {
        let p = pod(
            json!([{"name": "x", "image": "nginx:1.27"},
                   {"name": "y", "image": "weft/weft-examples:0.1.0", "command": ["/bin/sh"]},
                   {"name": "z", "image": "weft/weft-examples"}]),
            json!({}),
        );
        let spec = p.spec.clone().expect("spec");
        let reasons: Vec<_> = spec
            .containers
            .iter()
            .map(|c| resolve(&p, c).map_err(|r| r.reason))
            .collect();
        assert_eq!(
            reasons,
            vec![
                Err("ImageNotRunnable"),
                Err("CommandNotFound"),
                Err("NoCommand")
            ]
        );
    }

    #[test]
    fn registry_ports_are_not_tags() {
        assert_eq!(
            repository("reg:5000/weft/weft-proxy"),
            "reg:5000/weft/weft-proxy"
        );
        assert_eq!(
            repository("reg:5000/weft/weft-proxy:1"),
            "reg:5000/weft/weft-proxy"
        );
    }

    #[test]
    fn missing_mount_paths_are_made_in_an_overlay_never_on_the_host() {
        let launch = Launch {
            binary: "weft-control".into(),
            args: vec!["it's".into()],
            uid: 65532,
            gid: 65532,
        };
        let mounts = [
            Mount {
                source: PathBuf::from("/tmp"),
                target: "/etc/weft-test-none/ca".into(),
                read_only: true,
            },
            Mount {
                source: PathBuf::from("/tmp"),
                target: "/etc/weft-test-none/webhook".into(),
                read_only: false,
            },
        ];
        let s = script(
            &launch,
            Path::new("/bin/x"),
            &[7102],
            &mounts,
            Path::new("/s"),
        );
        assert_eq!(s.matches("mount -t overlay").count(), 1, "{s}");
        assert!(
            s.contains("lowerdir=/etc,upperdir=/s/overlay-0/upper"),
            "{s}"
        );
        assert!(
            s.contains("mount -o remount,bind,ro '/etc/weft-test-none/ca'"),
            "{s}"
        );
        assert!(
            s.ends_with("--groups 7102 --pdeathsig KILL -- '/bin/x' 'it'\\''s'\n"),
            "{s}"
        );
    }
}
