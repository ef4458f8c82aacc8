package launch

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// CheckHosts checks a host list of MPIRun.Hosts: every entry is a host name
// (letters, digits, '-', '_' and '.') or an address, optionally followed by
// ":slots", a whole number from 1. It returns an error naming the first bad
// entry.
func CheckHosts(hosts []string) error {
	for _, h := range hosts {
		name, slots, hasSlots := strings.Cut(h, ":")
		if name == "" {
			return fmt.Errorf("launch: host %q has no name", h)
		}
		for _, c := range name {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
				return fmt.Errorf("launch: host %q: %q is not allowed in a host name", h, c)
			}
		}
		if hasSlots {
			n, err := strconv.Atoi(slots)
			if err != nil || n < 1 {
				return fmt.Errorf("launch: host %q: the slots after ':' must be a whole number from 1", h)
			}
		}
	}
	return nil
}

// HostSlots returns the ranks that hosts offer: the sum of their slots, an
// entry without ":slots" counting as one. It assumes CheckHosts passed.
func HostSlots(hosts []string) int {
	n := 0
	for _, h := range hosts {
		if _, s, ok := strings.Cut(h, ":"); ok {
			k, _ := strconv.Atoi(s)
			n += k
		} else {
			n++
		}
	}
	return n
}

// placement returns the launcher flags of Hosts, Agent and Network for
// family f.
func (m MPIRun) placement(f Family) ([]string, error) {
	var argv []string
	if err := CheckHosts(m.Hosts); err != nil {
		return nil, err
	}
	if m.Agent != "" {
		st, err := os.Stat(m.Agent)
		switch {
		case err != nil:
			return nil, fmt.Errorf("launch: the remote shell agent %s: %w", m.Agent, err)
		case st.IsDir() || st.Mode().Perm()&0o111 == 0:
			return nil, fmt.Errorf("launch: the remote shell agent %s is not an executable file", m.Agent)
		}
	}
	var iface string
	if m.Network != "" && f == MPICH {
		var err error
		if iface, err = interfaceOf(m.Network); err != nil {
			return nil, err
		}
	} else if m.Network != "" {
		if strings.ContainsAny(m.Network, " ,\x00") {
			return nil, fmt.Errorf("launch: network %q: give one CIDR range or one interface name", m.Network)
		}
	}
	switch f {
	case MPICH:
		if len(m.Hosts) > 0 {
			argv = append(argv, "-hosts", strings.Join(m.Hosts, ","))
		}
		if m.Agent != "" {
			argv = append(argv, "-launcher", "ssh", "-launcher-exec", m.Agent)
		}
		if iface != "" {
			argv = append(argv, "-iface", iface)
		}
	default:
		if len(m.Hosts) > 0 {
			argv = append(argv, "-H", strings.Join(m.Hosts, ","))
		}
		if m.Agent != "" {
			argv = append(argv, "--mca", "plm_rsh_agent", m.Agent)
		}
		if m.Network != "" {
			argv = append(argv, "--mca", "btl_tcp_if_include", m.Network, "--mca", "oob_tcp_if_include", m.Network)
		}
	}
	return argv, nil
}

// errNoInterface says that no interface of this host is in the network.
var errNoInterface = errors.New("no interface of this host is in it")

// interfaceOf returns the name of this host's interface that network names:
// the interface itself, or the one with an address in the CIDR range.
func interfaceOf(network string) (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("launch: network %q: list the interfaces: %w", network, err)
	}
	_, cidr, cerr := net.ParseCIDR(network)
	for _, ifc := range ifs {
		if cerr != nil {
			if ifc.Name == network {
				return ifc.Name, nil
			}
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && cidr.Contains(ipn.IP) {
				return ifc.Name, nil
			}
		}
	}
	if cerr != nil {
		return "", fmt.Errorf("launch: network %q is neither a CIDR range nor an interface of this host", network)
	}
	return "", fmt.Errorf("launch: network %s: %w", network, errNoInterface)
}
