package rankpool

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestRunLocalDeepTrees runs trees of three and more levels in process:
// credit climbs through every sub-master, tasks come down and every result
// comes back exactly once to the front end.
func TestRunLocalDeepTrees(t *testing.T) {
	tests := []struct {
		name   string
		size   int
		nodeOf []int
		fanout int
		cfg    Config
	}{
		{name: "64 ranks, fan-out 8", size: 64, fanout: 8},
		{name: "40 ranks, fan-out 2", size: 40, fanout: 2},
		{name: "30 ranks on 6 nodes, fan-out 3", size: 30, nodeOf: blocks(30, 6), fanout: 3},
		{name: "24 single-rank nodes, fan-out 2", size: 24, nodeOf: blocks(24, 24), fanout: 2},
		{name: "slots, small batches, fan-out 2", size: 20, fanout: 2, cfg: Config{Slots: 2, Prefetch: 3, MaxBatch: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			tp, err := NewTopology(tt.size, tt.nodeOf, tt.fanout)
			require.NoError(t, err)
			require.GreaterOrEqual(t, tp.Depth(), 2, "the shape must have sub-masters")
			workers := map[int32]bool{}
			for r := range tt.size {
				if tp.Place(r).Role == RoleWorker {
					workers[int32(r)] = true
				}
			}
			require.Len(t, workers, tp.Workers())

			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			l := NewLocal(tt.size)
			defer l.Close()
			done := make(chan error, 1)
			go func() { done <- RunLocal(ctx, l, tt.nodeOf, tt.fanout, echo, tt.cfg) }()
			feErr := frontEnd{n: 20_000, batch: 4096, workers: workers}.drive(ctx, l)
			if feErr != nil {
				cancel()
			}
			require.NoError(t, feErr)
			require.NoError(t, <-done)
		})
	}
}
