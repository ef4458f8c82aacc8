package bench

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/rankfarm/rankfarm/launch"
)

// Machine names the machine a Result was measured on. Fields it cannot
// learn are empty.
type Machine struct {
	Host      string `json:"host"`
	Cores     int    `json:"cores"`
	GoVersion string `json:"go_version"`
	// CPUModel is /proc/cpuinfo's first "model name".
	CPUModel string `json:"cpu_model,omitempty"`
	// OS is /etc/os-release's PRETTY_NAME, or GOOS.
	OS string `json:"os,omitempty"`
	// MPI is the first line of the launcher's --version (its version line
	// for MPICH's Hydra).
	MPI string `json:"mpi,omitempty"`
	// Date is when the run started, UTC, RFC 3339.
	Date string `json:"date,omitempty"`
}

// ThisMachine describes this machine now.
func ThisMachine(ctx context.Context) Machine {
	host, _ := os.Hostname()
	m := Machine{Host: host, Cores: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS,
		Date: time.Now().UTC().Format(time.RFC3339)}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = cpuModel(data)
	}
	if data, err := os.ReadFile("/etc/os-release"); err == nil {
		if name := osName(data); name != "" {
			m.OS = name
		}
	}
	if _, path, err := (launch.MPIRun{}).Resolve(); err == nil {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, path, "--version").Output(); err == nil {
			m.MPI = mpiVersion(out)
		}
	}
	return m
}

// cpuModel returns the first "model name" of /proc/cpuinfo's text.
func cpuModel(cpuinfo []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return ""
}

// osName returns PRETTY_NAME of /etc/os-release's text.
func osName(osRelease []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(osRelease))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return ""
}

// mpiVersion picks the version out of a launcher's --version output: "Open
// MPI 4.1.4" from Open MPI's first line, "MPICH (Hydra) 4.0.2" from Hydra's
// "Version:" line, or else the first line.
func mpiVersion(out []byte) string {
	var first string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if first == "" {
			first = line
		}
		if v, ok := strings.CutPrefix(line, "Version:"); ok && strings.HasPrefix(first, "HYDRA") {
			return "MPICH (Hydra) " + strings.TrimSpace(v)
		}
	}
	for _, name := range []string{"(Open MPI)", "(OpenRTE)"} {
		if strings.Contains(first, name) {
			if f := strings.Fields(first); len(f) > 0 {
				return "Open MPI " + f[len(f)-1]
			}
		}
	}
	return first
}
