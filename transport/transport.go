// Package transport moves signed envelopes between ratchetd nodes: the
// Transport interface the engine uses, the envelope signature that tells a
// receiver who sent a message, Status's topic names, and an in-memory
// transport with injectable loss, duplication and reordering.
package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
)

// Limits of what a transport accepts.
const (
	// DefaultMaxPayload bounds one envelope's payload (Waku's default max
	// message size is 1 MiB).
	DefaultMaxPayload = 1 << 20
	// MaxTopicLength bounds a topic name.
	MaxTopicLength = 256
)

var (
	// ErrBadEnvelope: an envelope that is malformed or whose signature does
	// not verify. It never reaches a subscriber.
	ErrBadEnvelope = errors.New("transport: bad envelope")
	// ErrForged: the envelope's signature is not by the sender it names.
	ErrForged = errors.New("transport: forged envelope")
	// ErrClosed: the transport was closed.
	ErrClosed = errors.New("transport: closed")
	// ErrNotRecipient is a handler's answer for an envelope addressed to
	// an identity it does not host: another identity on a shared
	// (partitioned) topic. Nothing to offer again to that subscriber, but
	// the envelope did not reach its recipient, so a transport that
	// confirms delivery does not confirm it on that answer alone.
	ErrNotRecipient = errors.New("transport: not the envelope's recipient")
)

// Delivery is a received envelope whose signature verified.
type Delivery struct {
	Topic     string
	Recipient keys.PublicKey // zero for public topics
	Payload   []byte
	Sender    keys.PublicKey // recovered from the signature
	// ID identifies the envelope (Keccak-256 of its signed digest and
	// signature), as Status uses the Waku envelope hash.
	ID [32]byte
	// Taken, when set, is what a handler that queues the delivery and then
	// waits for its outcome calls once it is queued: the transport may then
	// hand the subscription's next delivery over before this one returns.
	// Optional, idempotent; nil when the transport does not pipeline.
	Taken func()
}

// Handler receives deliveries. A transport calls one subscription's handler
// in arrival order, one call after another, except that once a call has
// called Delivery.Taken the next call may begin; it may block
// (back-pressure). It returns an error when the delivery was not taken (the
// receiver could not commit it): a transport that acknowledges deliveries
// then does not, and the sender tries again; ErrNotRecipient when it was not
// for this subscriber.
type Handler func(Delivery) error

// Transport publishes envelopes on topics and delivers them to subscribers.
type Transport interface {
	Publish(env *messages.Envelope) error
	// Subscribe registers h for a topic; the returned func cancels it.
	Subscribe(topic string, h Handler) (cancel func(), err error)
	Close() error
}

// Confirmer is a Transport that learns whether an envelope reached the
// subscribers of its topic (the networked transport). The engine then keeps
// an envelope in its durable outbox until it is confirmed, and publishes it
// again (the same bytes) until it is.
type Confirmer interface {
	// PublishConfirm publishes env and calls done, from another goroutine,
	// with nil once its subscribers have it, or with why not.
	PublishConfirm(env *messages.Envelope, done func(error))
}

// Watcher is a Transport that learns when subscribers of a topic appear
// elsewhere (the networked transport: a peer node announcing a topic for the
// first time, or again after it was silent). The engine's outbox then offers
// what it holds back for a peer that was unreachable at once, instead of at
// the end of its backoff.
type Watcher interface {
	// WatchSubscribers calls fn with topics that just gained a subscriber,
	// from the transport's own goroutine: fn must not block. The returned
	// func stops the calls.
	WatchSubscribers(fn func(topics []string)) (cancel func())
}

// digest is what the sender signs: the topic, the recipient and the payload,
// each length-prefixed so that no two envelopes share a digest.
func digest(topic string, recipient, payload []byte) [32]byte {
	var hdr []byte
	hdr = binary.AppendUvarint(hdr, uint64(len(topic)))
	hdr = append(hdr, topic...)
	hdr = binary.AppendUvarint(hdr, uint64(len(recipient)))
	hdr = append(hdr, recipient...)
	hdr = binary.AppendUvarint(hdr, uint64(len(payload)))
	return keys.Keccak256([]byte("ratchetd-envelope-v1"), hdr, payload)
}

// Seal builds an envelope signed by the sender's identity. recipient may be
// nil for a public topic. It computes the sender's public key (a scalar
// multiplication); SealWith takes it.
func Seal(sender keys.PrivateKey, topic string, recipient *keys.PublicKey, payload []byte) (*messages.Envelope, error) {
	pub, err := sender.Public()
	if err != nil {
		return nil, err
	}
	return SealWith(keys.KeyPair{Private: sender, Public: pub}, topic, recipient, payload)
}

// SealWith is Seal with the sender's key pair.
func SealWith(sender keys.KeyPair, topic string, recipient *keys.PublicKey, payload []byte) (*messages.Envelope, error) {
	var rcpt []byte
	if recipient != nil {
		rcpt = recipient[:]
	}
	sig, err := keys.Sign(sender.Private, digest(topic, rcpt, payload))
	if err != nil {
		return nil, err
	}
	return &messages.Envelope{Topic: topic, Recipient: rcpt, Payload: payload, Signature: sig[:], Sender: sender.Public[:]}, nil
}

// Open checks an envelope and recovers its sender.
func Open(env *messages.Envelope, maxPayload int) (Delivery, error) {
	if maxPayload <= 0 {
		maxPayload = DefaultMaxPayload
	}
	var d Delivery
	if env == nil {
		return d, fmt.Errorf("%w: nil", ErrBadEnvelope)
	}
	if len(env.Topic) == 0 || len(env.Topic) > MaxTopicLength {
		return d, fmt.Errorf("%w: topic of %d bytes", ErrBadEnvelope, len(env.Topic))
	}
	if len(env.Payload) > maxPayload {
		return d, fmt.Errorf("%w: payload of %d bytes, limit %d", ErrBadEnvelope, len(env.Payload), maxPayload)
	}
	if len(env.Recipient) > 0 {
		r, err := keys.ParsePublicKey(env.Recipient)
		if err != nil {
			return d, fmt.Errorf("%w: recipient: %w", ErrBadEnvelope, err)
		}
		d.Recipient = r
	}
	dg := digest(env.Topic, env.Recipient, env.Payload)
	sender, err := keys.Recover(dg, env.Signature)
	if err != nil {
		return d, fmt.Errorf("%w: %w", ErrBadEnvelope, err)
	}
	if len(env.Sender) != keys.PublicKeySize || !sender.Equal(keys.PublicKey(env.Sender)) {
		return d, fmt.Errorf("%w: signed by %s", ErrForged, sender)
	}
	d.Topic, d.Payload, d.Sender = env.Topic, env.Payload, sender
	d.ID = keys.Keccak256(dg[:], env.Signature)
	return d, nil
}

// ContactCodeTopic is where an identity publishes its bundle:
// "0x" + hex(uncompressed key) + "-contact-code" (status-compat.md §4.5).
func ContactCodeTopic(identity keys.PublicKey) string {
	u, err := identity.Uncompressed()
	if err != nil {
		return ""
	}
	return fmt.Sprintf("0x%x-contact-code", u[:])
}

// NegotiatedTopic is where Status sends to an identity once a shared secret
// is agreed: "0x" + hex(uncompressed key) + "-negotiated" (status-compat.md
// §12; the Waku v2 content-topic derivation is §18's open point).
func NegotiatedTopic(identity keys.PublicKey) string {
	u, err := identity.Uncompressed()
	if err != nil {
		return ""
	}
	return fmt.Sprintf("0x%x-negotiated", u[:])
}

// PartitionedTopicCount is the number of Status's partitioned topics.
const PartitionedTopicCount = 5000

// PartitionedTopic is the topic on which an identity receives 1:1 messages
// before a shared secret is negotiated: "contact-discovery-" + (X mod 5000),
// X being the public key's x-coordinate (status-compat.md §12).
// It is named for every message sent: X mod 5000 is taken a byte at a time
// (X is public), not with math/big and fmt (five allocations).
func PartitionedTopic(identity keys.PublicKey) string {
	var r uint32
	for _, b := range identity[1:] {
		r = (r<<8 | uint32(b)) % PartitionedTopicCount
	}
	return "contact-discovery-" + strconv.FormatUint(uint64(r), 10)
}

// PublicTopic is the topic of a public chat by name.
func PublicTopic(name string) string { return "public-" + name }
