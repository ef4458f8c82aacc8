//go:build nompi || !cgo

package mpi

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestStartWithoutMPI(t *testing.T) {
	defer goleak.VerifyNone(t)
	for range 2 { // a failed Start leaves nothing behind: a second fails the same way
		e, err := Start(context.Background(), Options{})
		require.ErrorIs(t, err, ErrNoMPI)
		assert.Nil(t, e)
	}
}

func TestRawWithoutMPI(t *testing.T) {
	_, err := Init(ThreadFunneled)
	assert.ErrorIs(t, err, ErrNoMPI)
	_, _, _, err = NodeSplit()
	assert.ErrorIs(t, err, ErrNoMPI)
	_, _, found, err := Improbe(AnySource, AnyTag)
	assert.False(t, found)
	assert.ErrorIs(t, err, ErrNoMPI)
	_, err = Isend([]byte("x"), 0, 0)
	assert.ErrorIs(t, err, ErrNoMPI)
}
