// Package actors will hold ratchetd's protoactor-go actors (issue 3): the
// Engine, one Installation per hosted device with its BundlePublisher and
// device registry, a SessionSupervisor per peer identity and a PeerSession
// per (peer identity, peer installation, bundle id), each the only writer of
// its state (design/architecture.md).
package actors
