package serialize

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNodeRuns(t *testing.T) {
	tests := []struct {
		nodeOf []int
		runs   []int32
	}{
		{nil, nil},
		{[]int{0}, []int32{0, 1}},
		{[]int{0, 0, 0, 0, 1, 1, 1, 1}, []int32{0, 4, 1, 4}},
		{[]int{0, 1, 0, 1}, []int32{0, 1, 1, 1, 0, 1, 1, 1}},
	}
	for _, tt := range tests {
		runs := NodeRunsOf(tt.nodeOf)
		assert.Equal(t, tt.runs, runs, "%v", tt.nodeOf)
		h := Hello{Ranks: int32(len(tt.nodeOf)), NodeRuns: runs}
		assert.Equal(t, tt.nodeOf, h.NodeOf())
	}
}

// TestHelloLayoutChecked sends Hellos whose layout does not fit their size
// and checks that each is refused with its reason, and that a Hello of an
// earlier release (8 fields, no layout) still decodes.
func TestHelloLayoutChecked(t *testing.T) {
	c := NewCodec(Options{})
	good := Hello{Version: 1, Block: "b", Ranks: 4, Workers: 3, Host: "h", PID: 1,
		Fanout: 8, NodeHosts: []string{"h1", "h2"}, NodeRuns: []int32{0, 2, 1, 2}}
	tests := []struct {
		name    string
		edit    func(h *Hello)
		wantErr string
	}{
		{"good", func(*Hello) {}, ""},
		{"no layout", func(h *Hello) { h.Fanout, h.NodeHosts, h.NodeRuns = 0, nil, nil }, ""},
		{"negative fan-out", func(h *Hello) { h.Fanout = -1 }, "fan-out -1"},
		{"more hosts than ranks", func(h *Hello) { h.NodeHosts = []string{"a", "b", "c", "d", "e"} }, "5 node hosts for 4 ranks"},
		{"odd runs", func(h *Hello) { h.NodeRuns = []int32{0, 2, 1} }, "3 node run entries"},
		{"runs without hosts", func(h *Hello) { h.NodeHosts = nil }, "4 node run entries for 4 ranks and 0 nodes"},
		{"node out of range", func(h *Hello) { h.NodeRuns = []int32{0, 2, 2, 2} }, "node 2 of 2"},
		{"empty run", func(h *Hello) { h.NodeRuns = []int32{0, 4, 1, 0} }, "a run of 0 ranks"},
		{"short runs", func(h *Hello) { h.NodeRuns = []int32{0, 1, 1, 2} }, "cover 3 ranks, not 4"},
		{"unnamed node", func(h *Hello) { h.NodeRuns = []int32{0, 4} }, "node 1 has no rank"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := good
			tt.edit(&h)
			b, err := c.AppendBody(nil, &h)
			require.NoError(t, err)
			got, err := c.DecodeBody(b)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, &h, got)
		})
	}

	// An earlier release's Hello: the same first 8 fields and no more.
	old := []byte{0x98, 0x01, 0xa1, 'b', 0xc4, 0x01, 0x01, 0xc0, 0x04, 0x03, 0xa1, 'h', 0xcd, 0x01, 0x2c}
	got, err := c.DecodeBody(body(ProtocolVersion, CodecRaw, KindHello, old...))
	require.NoError(t, err)
	assert.Equal(t, &Hello{Version: 1, Block: "b", Proof: []byte{1}, Ranks: 4, Workers: 3, Host: "h", PID: 300}, got)
	assert.Nil(t, got.(*Hello).NodeOf())
}
