package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// HostsComparison is one run of the same parts on a block on this host and
// on a block of as many ranks spread over other hosts: what crossing host
// boundaries costs ("rankfarm bench --hosts").
type HostsComparison struct {
	// Hosts are the hosts of the second block, as --hosts gave them.
	Hosts []string `json:"hosts"`
	// OneHost ran on this host, AcrossHosts on Hosts; both have NP ranks.
	OneHost     Result `json:"one_host"`
	AcrossHosts Result `json:"across_hosts"`
	// LatencyP50Ratio is AcrossHosts' p50 over OneHost's (the target is at
	// most 1.5); TasksPerSRatio AcrossHosts' throughput over OneHost's (the
	// target is at least 0.8). 0 when the part did not run.
	LatencyP50Ratio float64 `json:"latency_p50_ratio,omitempty"`
	TasksPerSRatio  float64 `json:"tasks_per_s_ratio,omitempty"`
}

// CompareHosts runs cfg's parts on a block that local starts, then on one
// that across starts (each of cfg.NP ranks), and compares them. Scaling and
// memory do not take part: they say nothing about hosts.
func CompareHosts(ctx context.Context, local, across StartFunc, hosts []string, cfg Config) (HostsComparison, error) {
	c := HostsComparison{Hosts: hosts}
	var parts []string
	for _, p := range cfg.Parts {
		if p != PartScaling && p != PartMemory {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return c, fmt.Errorf("bench: --hosts compares throughput, latency and efficiency; none of them is among the parts %v", cfg.Parts)
	}
	cfg.Parts = parts
	progress := cfg.Progress
	say := func(where string) func(string) {
		return func(s string) {
			if progress != nil {
				progress(where + ": " + s)
			}
		}
	}
	var err error
	cfg.Progress = say("one host")
	if c.OneHost, err = Suite(ctx, local, cfg); err != nil {
		return c, fmt.Errorf("bench: on one host: %w", err)
	}
	cfg.Progress = say("across hosts")
	if c.AcrossHosts, err = Suite(ctx, across, cfg); err != nil {
		return c, fmt.Errorf("bench: across hosts: %w", err)
	}
	if c.OneHost.LatencyP50us > 0 {
		c.LatencyP50Ratio = c.AcrossHosts.LatencyP50us / c.OneHost.LatencyP50us
	}
	if c.OneHost.TasksPerS > 0 {
		c.TasksPerSRatio = c.AcrossHosts.TasksPerS / c.OneHost.TasksPerS
	}
	return c, nil
}

// WriteJSON prints c as one JSON object.
func (c HostsComparison) WriteJSON(w io.Writer) error { return json.NewEncoder(w).Encode(c) }

// WriteTable prints both runs and their ratios for people.
func (c HostsComparison) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "== one host (np %d)\n", c.OneHost.NP)
	if err := c.OneHost.WriteTable(&b); err != nil {
		return err
	}
	fmt.Fprintf(&b, "== across %d hosts (%s)\n", len(c.Hosts), strings.Join(c.Hosts, ","))
	if err := c.AcrossHosts.WriteTable(&b); err != nil {
		return err
	}
	if c.LatencyP50Ratio > 0 {
		fmt.Fprintf(&b, "latency p50 across hosts / one host: %.2f (target at most 1.5)\n", c.LatencyP50Ratio)
	}
	if c.TasksPerSRatio > 0 {
		fmt.Fprintf(&b, "throughput across hosts / one host: %.2f (target at least 0.8)\n", c.TasksPerSRatio)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
