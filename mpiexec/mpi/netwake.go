package mpi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
)

// Network wake-ups. The doorbells wake a rank that sleeps when a neighbour
// on its node sends to it; a rank on another host cannot reach them, so a
// message from there would wait for the end of the receiver's sleep (up to
// MaxIdleSleep at every such hop: a lone task crossing from rank 0 to a
// sub-master on another host and back paid it twice). Instead, in a world
// of several nodes, every rank binds a UDP socket on its host's address in
// the block's network and a goroutine reads it: any datagram rings the
// rank's own bell. A rank that posts a send to a rank on another node sends
// it an empty datagram too, unless the two have exchanged a message within
// netWakeQuiet (then the peer is busy, not asleep, and the datagram would
// only cost both a system call). Datagrams carry nothing: a stray one is a
// spurious wake-up, nothing more.

// EnvNetwork names the network of the block (a CIDR range or an interface
// name, as launch.MPIRun.Network): the address the ranks' wake-up sockets
// bind to. Without it a rank takes the address its host name resolves to,
// or else its first non-loopback IPv4 address.
const EnvNetwork = "RANKFARM_NETWORK"

// netWakeQuiet is how long two ranks on different nodes must have been
// silent towards each other before a send between them also sends a
// wake-up datagram.
const netWakeQuiet = 100 * time.Microsecond

// wakeByte is the content of a wake-up datagram; any content would do.
var wakeByte = [1]byte{'w'}

// netWaker is a rank's end of the network wake-ups.
type netWaker struct {
	conn  *net.UDPConn
	peers []netip.AddrPort // by world rank; invalid for ranks of this node
	last  map[int]time.Time
	sent  int64         // datagrams sent (the loop's only)
	done  chan struct{} // closed when the reader has ended (nil: none)
}

// packAddr packs an IPv4 address and port into one int for AllgatherInt; 0
// means none.
func packAddr(ap netip.AddrPort) int {
	if !ap.IsValid() || !ap.Addr().Is4() {
		return 0
	}
	a := ap.Addr().As4()
	return int(binary.BigEndian.Uint32(a[:]))<<16 | int(ap.Port())
}

// unpackAddr undoes packAddr.
func unpackAddr(v int) netip.AddrPort {
	if v <= 0 {
		return netip.AddrPort{}
	}
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], uint32(v>>16))
	return netip.AddrPortFrom(netip.AddrFrom4(a), uint16(v&0xffff))
}

// localAddr picks this host's IPv4 address for the wake-up socket: in
// network (a CIDR range or an interface name) when given, else the one the
// host name resolves to, else the first non-loopback one.
func localAddr(network string) (netip.Addr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, err
	}
	var prefix netip.Prefix
	if network != "" {
		if p, err := netip.ParsePrefix(network); err == nil {
			prefix = p
		}
	}
	var first netip.Addr
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok || !ip.Unmap().Is4() {
				continue
			}
			ip = ip.Unmap()
			switch {
			case prefix.IsValid():
				if prefix.Contains(ip) {
					return ip, nil
				}
			case network != "":
				if ifc.Name == network {
					return ip, nil
				}
			case !ip.IsLoopback() && !first.IsValid():
				first = ip
			}
		}
	}
	if network != "" {
		return netip.Addr{}, fmt.Errorf("no IPv4 address of this host in network %q", network)
	}
	if host, err := os.Hostname(); err == nil {
		if ips, err := net.LookupIP(host); err == nil {
			for _, ip := range ips {
				if a, ok := netip.AddrFromSlice(ip); ok && a.Unmap().Is4() && !a.Unmap().IsLoopback() {
					return a.Unmap(), nil
				}
			}
		}
	}
	if first.IsValid() {
		return first, nil
	}
	return netip.Addr{}, errors.New("no non-loopback IPv4 address on this host")
}

// setupNetWake makes this rank's wake-up socket and exchanges the addresses
// of every rank (collective: every rank calls it, whatever it finds). It
// returns nil, with no error, when the world is one node, when disabled is
// set, or when this rank found no address (it then only wakes others).
func (e *Endpoint) setupNetWake(disabled bool) (*netWaker, error) {
	nodes := 0
	for _, n := range e.nodeOf {
		nodes = max(nodes, n+1)
	}
	if nodes < 2 {
		return nil, nil
	}
	var conn *net.UDPConn
	mine := 0
	if !disabled {
		ip, err := localAddr(os.Getenv(EnvNetwork))
		if err == nil {
			conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		}
		if err != nil {
			e.log.Warn("mpi: no network wake-ups for this rank: ranks on other hosts will wait for its sleep to end", "err", err)
		} else {
			mine = packAddr(conn.LocalAddr().(*net.UDPAddr).AddrPort())
		}
	}
	all, err := AllgatherInt(mine)
	if err != nil {
		if conn != nil {
			_ = conn.Close()
		}
		return nil, err
	}
	if disabled {
		return nil, nil
	}
	w := &netWaker{conn: conn, peers: make([]netip.AddrPort, len(all)), last: map[int]time.Time{}}
	for r, v := range all {
		if e.nodeOf[r] != e.nodeOf[e.rank] {
			w.peers[r] = unpackAddr(v)
		}
	}
	if conn == nil {
		// No socket of its own: it still wakes the others, from an
		// unbound socket.
		if w.conn, err = net.ListenUDP("udp4", nil); err != nil {
			return nil, nil
		}
		return w, nil
	}
	w.done = make(chan struct{})
	go func() {
		defer close(w.done)
		buf := make([]byte, 64)
		for {
			if _, _, err := conn.ReadFromUDPAddrPort(buf); err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			e.w.wake()
		}
	}()
	return w, nil
}

// touch records traffic with peer (a rank of another node) at now.
func (w *netWaker) touch(peer int, now time.Time) {
	if w != nil && w.peers[peer].IsValid() {
		w.last[peer] = now
	}
}

// sentTo is called after a send to dest is posted: it wakes dest through
// its socket when dest is on another node and the two have been quiet for
// netWakeQuiet.
func (w *netWaker) sentTo(dest int, now time.Time) {
	if w == nil || !w.peers[dest].IsValid() {
		return
	}
	if last, ok := w.last[dest]; ok && now.Sub(last) < netWakeQuiet {
		w.last[dest] = now
		return
	}
	w.last[dest] = now
	if _, err := w.conn.WriteToUDPAddrPort(wakeByte[:], w.peers[dest]); err == nil {
		w.sent++
	}
}

// close ends the socket and waits for its reader, which rings the bells:
// call it before the bells go.
func (w *netWaker) close() {
	if w == nil || w.conn == nil {
		return
	}
	_ = w.conn.Close()
	if w.done != nil {
		<-w.done
	}
}
