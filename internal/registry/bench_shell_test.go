package registry

import (
	"context"
	"os/exec"
	"testing"
)

// BenchmarkRunShellTrue measures one shell task: fork, exec, capture and
// the group kill.
func BenchmarkRunShellTrue(b *testing.B) {
	for b.Loop() {
		if _, err := RunShellSpec(context.Background(), ShellSpec{Cmd: "true"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExecShellTrue is the floor: os/exec alone, no group, no capture.
func BenchmarkExecShellTrue(b *testing.B) {
	for b.Loop() {
		if err := exec.Command("/bin/sh", "-c", "true").Run(); err != nil {
			b.Fatal(err)
		}
	}
}
