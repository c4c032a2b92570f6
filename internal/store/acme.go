package store

import (
	"context"
	"time"
)

// This file declares what the ACME certificate manager (internal/acme)
// keeps in the store so that every node of a cluster serves the same
// certificates: the certificates and their keys, the claims that make one
// node at a time order a given certificate, and the challenge responses
// of orders in progress (the CA may connect to any node). The ACME
// account key is a named secret (Secrets).

// ACMECertificate is a certificate obtained from an ACME CA for one host
// name, with its private key.
type ACMECertificate struct {
	Name      string    // the host name, lower-case ASCII
	CertPEM   []byte    // the certificate chain, leaf first, PEM
	KeyPEM    []byte    // the private key, PKCS #8 PEM
	NotBefore time.Time // of the leaf
	NotAfter  time.Time // of the leaf
	Updated   time.Time // when it was stored
}

// ACMEStore keeps ACME certificates, order claims and challenge responses
// for every node.
type ACMEStore interface {
	// ACMECertificate returns the certificate of name; none: ErrNotFound.
	ACMECertificate(ctx context.Context, name string) (ACMECertificate, error)
	// PutACMECertificate stores c, replacing the certificate of c.Name.
	PutACMECertificate(ctx context.Context, c ACMECertificate) error
	// ClaimACMEOrder claims the ordering of name's certificate until until
	// and returns the claim's token, unless another claim on it lasts past
	// now: then it returns "" (not an error). A claim that ran out (its
	// node died while ordering) can be taken over.
	ClaimACMEOrder(ctx context.Context, name string, now, until time.Time) (token string, err error)
	// ReleaseACMEOrder ends the claim token on name; a claim taken over by
	// another node (or an unknown token) is left alone, and is not an
	// error.
	ReleaseACMEOrder(ctx context.Context, name, token string) error
	// PutACMEChallenge stores the response to a challenge under key (for
	// example "http-01/TOKEN") until expires, replacing any.
	PutACMEChallenge(ctx context.Context, key string, value []byte, expires time.Time) error
	// ACMEChallenge returns the response stored under key that has not
	// expired at now; none: ErrNotFound.
	ACMEChallenge(ctx context.Context, key string, now time.Time) ([]byte, error)
	// DeleteACMEChallenge deletes key's response and every response
	// expired at now.
	DeleteACMEChallenge(ctx context.Context, key string, now time.Time) error
}
