// Package transport will hold the message transports (issues 3 and 6): an
// in-memory transport with topics and injectable loss, duplication and
// reordering, the sender's identity carried with an ECDSA signature over the
// payload, and later a networked transport.
package transport
