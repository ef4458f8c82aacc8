//go:build cgo && !nompi && mpich

package mpi

// #cgo pkg-config: mpich
import "C"
