//go:build tools

// Keeps h2spec in go.mod for `go build github.com/summerwind/h2spec/cmd/h2spec`.
package tools

import _ "github.com/summerwind/h2spec/cmd/h2spec"
