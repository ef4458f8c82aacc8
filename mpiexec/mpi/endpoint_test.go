package mpi

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestNodeMap(t *testing.T) {
	tests := []struct {
		name    string
		leaders []int
		want    []int
	}{
		{"one rank", []int{0}, []int{0}},
		{"one node", []int{0, 0, 0, 0}, []int{0, 0, 0, 0}},
		{"two nodes in blocks", []int{0, 0, 2, 2}, []int{0, 0, 1, 1}},
		{"round robin", []int{0, 1, 0, 1, 0}, []int{0, 1, 0, 1, 0}},
		{"numbered by first appearance", []int{5, 5, 0, 7}, []int{0, 0, 1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, nodeMap(tt.leaders))
		})
	}
}

func TestLocalRanks(t *testing.T) {
	tests := []struct {
		name   string
		nodeOf []int
		me     int
		want   map[int]int32
	}{
		{"one rank", []int{0}, 0, map[int]int32{0: 0}},
		{"one node", []int{0, 0, 0}, 2, map[int]int32{0: 0, 1: 1, 2: 2}},
		{"second of two nodes in blocks", []int{0, 0, 1, 1}, 3, map[int]int32{2: 0, 3: 1}},
		{"round robin", []int{0, 1, 0, 1, 0}, 4, map[int]int32{0: 0, 2: 1, 4: 2}},
		{"alone on its node", []int{0, 0, 1}, 2, map[int]int32{2: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, localRanks(tt.nodeOf, tt.me))
		})
	}
}

func TestOptionsDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   Options
		want time.Duration
	}{
		{"zero", Options{}, defaultMaxIdleSleep},
		{"negative", Options{MaxIdleSleep: -time.Second}, defaultMaxIdleSleep},
		{"below the first sleep", Options{MaxIdleSleep: time.Nanosecond}, minIdleSleep},
		{"kept", Options{MaxIdleSleep: 3 * time.Millisecond}, 3 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.in.withDefaults()
			assert.Equal(t, tt.want, o.MaxIdleSleep)
			assert.NotNil(t, o.Logger)
			assert.Equal(t, defaultRecvBuffer, o.RecvBuffer)
			assert.Equal(t, defaultMaxInFlight, o.MaxInFlight)
		})
	}
}

func TestThreadLevelString(t *testing.T) {
	assert.Equal(t, "MPI_THREAD_FUNNELED", ThreadFunneled.String())
	assert.Equal(t, "ThreadLevel(9)", ThreadLevel(9).String())
}
