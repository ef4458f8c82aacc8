package sim

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEventHeapOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var h eventHeap
	h.seq = 1<<32 - 500 // cross the wrap of the sequence numbers
	type key struct {
		at int64
		n  uint64
	}
	var want []key
	n := uint64(0)
	popped := []key{}
	for round := range 50 {
		for range rng.IntN(200) {
			at := int64(rng.IntN(40)) + int64(round)*10 // same times, out of order
			h.push(event{at: at, id: n})
			want = append(want, key{at, n})
			n++
		}
		for range rng.IntN(150) {
			if h.len() == 0 {
				break
			}
			e := h.pop()
			popped = append(popped, key{e.at, e.id})
		}
	}
	for h.len() > 0 {
		e := h.pop()
		popped = append(popped, key{e.at, e.id})
	}
	require.Len(t, popped, len(want))
	// Events of equal times come out in push order, and every event comes
	// out once.
	for i := 1; i < len(popped); i++ {
		a, b := popped[i-1], popped[i]
		if a.at == b.at {
			require.Less(t, a.n, b.n)
		}
	}
	slices.SortFunc(popped, func(a, b key) int { return int(a.n) - int(b.n) })
	require.Equal(t, want, popped)
}
