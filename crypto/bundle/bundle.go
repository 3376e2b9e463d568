// Package bundle creates, signs and verifies Status X3DH prekey bundles
// (5/SECURE-TRANSPORT "Prekey bundles"; status-compat.md §4).
//
// A bundle maps installation ids to signed prekeys and is signed by the
// identity key over a byte string built exactly as status-go's
// buildSignatureMaterial (§4.3). Verification (§4.4) is a separate step that
// returns a Verified value: the rest of the engine takes a Verified, never a
// raw *messages.Bundle, so an unverified bundle cannot be used or stored.
package bundle

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
)

// ProtocolVersion is what Status puts in SignedPreKey.protocol_version for its
// own installation (status-compat.md §4.1).
const ProtocolVersion = 1

// DefaultMaxEntries bounds the installations a received bundle may list.
// Status advertises at most 3 (itself and 2 paired devices, §9) and does not
// check on receipt; the bound only stops a peer from making us verify and
// track an unbounded map.
const DefaultMaxEntries = 16

// MaxInstallationIDLength bounds an installation id. Status's are 36-byte
// UUIDs (status-compat.md §2).
const MaxInstallationIDLength = 128

var (
	// ErrMalformedBundle: a bundle with a missing or invalid field.
	ErrMalformedBundle = errors.New("bundle: malformed bundle")
	// ErrBadSignature: the signature does not verify for the bundle's identity.
	ErrBadSignature = keys.ErrBadSignature
)

// Entry is one installation's signed prekey.
type Entry struct {
	InstallationID  string
	SignedPreKey    keys.PublicKey
	Version         uint32
	ProtocolVersion uint32
}

// Verified is a bundle whose signature has been checked and whose keys have
// been parsed. Entries are sorted by installation id.
type Verified struct {
	Identity  keys.PublicKey
	Entries   []Entry
	Timestamp int64 // Unix nanoseconds
	Signature [keys.SignatureSize]byte
}

// Entry returns the entry of one installation.
func (v *Verified) Entry(installationID string) (Entry, bool) {
	i, ok := slices.BinarySearchFunc(v.Entries, installationID, func(e Entry, id string) int {
		return strings.Compare(e.InstallationID, id)
	})
	if !ok {
		return Entry{}, false
	}
	return v.Entries[i], true
}

// Proto returns the wire form of the verified bundle.
func (v *Verified) Proto() *messages.Bundle {
	b := &messages.Bundle{
		Identity:      v.Identity[:],
		SignedPreKeys: make(map[string]*messages.SignedPreKey, len(v.Entries)),
		Signature:     v.Signature[:],
		Timestamp:     v.Timestamp,
	}
	for _, e := range v.Entries {
		b.SignedPreKeys[e.InstallationID] = &messages.SignedPreKey{
			SignedPreKey:    e.SignedPreKey[:],
			Version:         e.Version,
			ProtocolVersion: e.ProtocolVersion,
		}
	}
	return b
}

// SignatureMaterial builds the signed byte string of status-compat.md §4.3:
// for each installation id in byte order, id ‖ SPK (33 B) ‖ decimal version;
// then the decimal timestamp if it is non-zero. No separators, no identity,
// no protocol_version.
func SignatureMaterial(entries []Entry, timestamp int64) []byte {
	sorted := sortedEntries(entries)
	n := 20
	for _, e := range sorted {
		n += len(e.InstallationID) + keys.PublicKeySize + 10
	}
	m := make([]byte, 0, n)
	for _, e := range sorted {
		m = append(m, e.InstallationID...)
		m = append(m, e.SignedPreKey[:]...)
		m = strconv.AppendUint(m, uint64(e.Version), 10)
	}
	if timestamp != 0 {
		m = strconv.AppendInt(m, timestamp, 10)
	}
	return m
}

// Digest is Keccak-256 of the signature material.
func Digest(entries []Entry, timestamp int64) [32]byte {
	return keys.Keccak256(SignatureMaterial(entries, timestamp))
}

// Sign builds and signs a bundle of identity for the given entries at
// timestamp (Unix ns); the key pair is checked first. Status re-signs its bundle with the current time every
// time it attaches it (§4.2); callers do the same by calling Sign again.
func Sign(identity keys.KeyPair, entries []Entry, timestamp int64) (*Verified, error) {
	// A pair whose halves disagree would yield a bundle no peer accepts.
	if pub, err := identity.Private.Public(); err != nil || !pub.Equal(identity.Public) {
		return nil, fmt.Errorf("%w: identity key pair does not match", keys.ErrInvalidKey)
	}
	sorted := sortedEntries(entries)
	for i, e := range sorted {
		if err := checkInstallationID(e.InstallationID); err != nil {
			return nil, err
		}
		if i > 0 && sorted[i-1].InstallationID == e.InstallationID {
			return nil, fmt.Errorf("%w: installation %q listed twice", ErrMalformedBundle, e.InstallationID)
		}
	}
	sig, err := keys.Sign(identity.Private, Digest(sorted, timestamp))
	if err != nil {
		return nil, err
	}
	return &Verified{Identity: identity.Public, Entries: sorted, Timestamp: timestamp, Signature: sig}, nil
}

// Verifier checks received bundles. The zero value uses the defaults.
type Verifier struct {
	// MaxEntries is the most installations a bundle may list
	// (DefaultMaxEntries when zero).
	MaxEntries int
}

// Verify checks a received bundle with the default limits.
func Verify(b *messages.Bundle) (*Verified, error) {
	return Verifier{}.Verify(b)
}

// Verify parses every key of b, rebuilds the signature material and checks
// the signature against the bundle's identity (status-compat.md §4.4). It
// returns a Verified bundle only if everything holds.
func (vf Verifier) Verify(b *messages.Bundle) (*Verified, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: no bundle", ErrMalformedBundle)
	}
	max := vf.MaxEntries
	if max <= 0 {
		max = DefaultMaxEntries
	}
	identity, err := keys.ParsePublicKey(b.GetIdentity())
	if err != nil {
		return nil, fmt.Errorf("%w: identity: %w", ErrMalformedBundle, err)
	}
	spks := b.GetSignedPreKeys()
	if len(spks) == 0 {
		return nil, fmt.Errorf("%w: no signed prekeys", ErrMalformedBundle)
	}
	if len(spks) > max {
		return nil, fmt.Errorf("%w: %d installations, limit %d", ErrMalformedBundle, len(spks), max)
	}
	if len(b.GetSignature()) != keys.SignatureSize {
		return nil, fmt.Errorf("%w: signature is %d bytes", ErrBadSignature, len(b.GetSignature()))
	}
	entries := make([]Entry, 0, len(spks))
	for id, spk := range spks {
		if err := checkInstallationID(id); err != nil {
			return nil, err
		}
		if spk == nil {
			return nil, fmt.Errorf("%w: installation %q has no prekey", ErrMalformedBundle, id)
		}
		pk, err := keys.ParsePublicKey(spk.GetSignedPreKey())
		if err != nil {
			return nil, fmt.Errorf("%w: installation %q: %w", ErrMalformedBundle, id, err)
		}
		entries = append(entries, Entry{
			InstallationID:  id,
			SignedPreKey:    pk,
			Version:         spk.GetVersion(),
			ProtocolVersion: spk.GetProtocolVersion(),
		})
	}
	sortEntries(entries)
	if err := keys.Verify(identity, Digest(entries, b.GetTimestamp()), b.GetSignature()); err != nil {
		return nil, err
	}
	v := &Verified{Identity: identity, Entries: entries, Timestamp: b.GetTimestamp()}
	copy(v.Signature[:], b.GetSignature())
	return v, nil
}

func checkInstallationID(id string) error {
	if id == "" || len(id) > MaxInstallationIDLength || !utf8.ValidString(id) {
		return fmt.Errorf("%w: invalid installation id %q", ErrMalformedBundle, id)
	}
	return nil
}

func sortedEntries(entries []Entry) []Entry {
	if slices.IsSortedFunc(entries, cmpEntry) {
		return entries
	}
	s := slices.Clone(entries)
	sortEntries(s)
	return s
}

// sortEntries orders by installation id as bytes, as Go's sort.Strings does
// in status-go.
func sortEntries(entries []Entry) { slices.SortFunc(entries, cmpEntry) }

func cmpEntry(a, b Entry) int { return strings.Compare(a.InstallationID, b.InstallationID) }
