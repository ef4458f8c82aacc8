package testutil

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestSyncBufferConcurrentWrites(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				fmt.Fprintf(&b, "%d-%d\n", g, i)
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	assert.Len(t, lines, 800, "every line whole")
	for _, l := range lines {
		var g, i int
		_, err := fmt.Sscanf(l, "%d-%d", &g, &i)
		assert.NoError(t, err, "a torn line: %q", l)
	}
}
