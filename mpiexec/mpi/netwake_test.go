package mpi

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPackAddr(t *testing.T) {
	tests := []struct {
		in   string
		zero bool
	}{
		{"198.18.0.11:45215", false},
		{"10.255.255.254:1", false},
		{"255.255.255.255:65535", false},
		{"[::1]:80", true},
	}
	for _, tt := range tests {
		ap := netip.MustParseAddrPort(tt.in)
		v := packAddr(ap)
		if tt.zero {
			assert.Zero(t, v, tt.in)
			continue
		}
		assert.Positive(t, v, tt.in)
		assert.Equal(t, ap, unpackAddr(v), tt.in)
	}
	assert.False(t, unpackAddr(0).IsValid())
	assert.False(t, packAddr(netip.AddrPort{}) != 0)
}

func TestLocalAddr(t *testing.T) {
	ip, err := localAddr("127.0.0.0/8")
	require.NoError(t, err)
	assert.True(t, ip.IsLoopback())
	ip, err = localAddr("lo")
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1", ip.String())
	_, err = localAddr("198.51.100.0/24")
	assert.ErrorContains(t, err, `no IPv4 address of this host in network "198.51.100.0/24"`)
}

// TestNetWakerQuiet checks when a send wakes its peer: the first time, and
// again only after netWakeQuiet without traffic either way; never a rank of
// its own node.
func TestNetWakerQuiet(t *testing.T) {
	w := &netWaker{peers: make([]netip.AddrPort, 3), last: map[int]time.Time{}}
	// A receiver on loopback stands for rank 2 on another host.
	rx, err := localUDP()
	require.NoError(t, err)
	defer rx.Close()
	w.peers[2] = rx.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
	tx, err := localUDP()
	require.NoError(t, err)
	defer tx.Close()
	w.conn = tx
	t0 := time.Unix(1000, 0)
	w.sentTo(1, t0) // rank 1 is on this node: no datagram
	w.sentTo(2, t0)
	w.sentTo(2, t0.Add(netWakeQuiet/2))
	w.touch(2, t0.Add(netWakeQuiet))                   // a message from rank 2
	w.sentTo(2, t0.Add(netWakeQuiet*3/2))              // still busy
	w.sentTo(2, t0.Add(netWakeQuiet*3/2+netWakeQuiet)) // quiet again
	assert.Equal(t, int64(2), w.sent)
	buf := make([]byte, 8)
	for range 2 {
		require.NoError(t, rx.SetReadDeadline(time.Now().Add(5*time.Second)))
		n, err := rx.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
	}
}

// localUDP opens a UDP socket on an ephemeral port of 127.0.0.1.
func localUDP() (*net.UDPConn, error) {
	return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
}
