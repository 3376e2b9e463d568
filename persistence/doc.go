// Package persistence will hold the durable store (issue 4): a Store
// interface used by the actors and its Badger implementation, with group
// commit, secrets encrypted at rest and crash safety.
package persistence
