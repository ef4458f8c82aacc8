// Package rankpool is rankfarm's brain, with no I/O inside: the tree
// topology of a block as a pure function (Layout), the role state machines
// (Relay for the scheduler and sub-masters, Worker for the leaves) written as
// Step/Ready in the style of etcd's raft package, a driver (Run) that binds
// one rank's state machine to a Transport and a Runner, and an in-process
// Transport (Local, RunLocal) that runs a whole tree as goroutines.
//
// The state machines take no locks, start no goroutines and never read the
// clock, so a simulator may drive a million of them on a virtual clock.
//
// Ownership: Step takes ownership of the message it is given (and of the
// slices inside it); the messages that Ready returns belong to the caller,
// which hands them to a Transport. Neither side touches a message again after
// handing it over, so tasks and results travel without copies.
package rankpool
