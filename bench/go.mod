module github.com/ratchetd/ratchetd/bench

go 1.26.0

require (
	github.com/ethereum/go-ethereum v1.17.10
	github.com/ratchetd/ratchetd v0.0.0-00010101000000-000000000000
	github.com/status-im/doubleratchet v3.0.0+incompatible
	go.mau.fi/libsignal v0.2.1
	golang.org/x/crypto v0.59.0
	google.golang.org/protobuf v1.36.12
)

require (
	filippo.io/edwards25519 v1.1.0 // indirect
	github.com/ProjectZKM/Ziren/crates/go-runtime/zkvm_runtime v0.0.0-20251001021608-1fe7b43fc4d6 // indirect
	github.com/decred/dcrd/dcrec/secp256k1/v4 v4.0.1 // indirect
	github.com/holiman/uint256 v1.3.2 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/text v0.44.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260819154853-08b0e4226688 // indirect
	google.golang.org/grpc v1.83.1 // indirect
)

replace github.com/ratchetd/ratchetd => ../
