// Package vectors checks ratchetd's crypto and wire layers against Status's
// known-answer vectors (../shared/reference/vectors, schema in its README):
// X3DH, bundles, KDF_RK, KDF_CK, ENCRYPT, the DH fallback and whole sessions
// replayed step by step with scripted keys. It holds tests only.
//
// Set RATCHETD_VECTORS to check another file of the same schema.
package vectors
