package store

import (
	"context"
	"time"
)

// This file declares the state of the web console (issue 10): its
// operators and the login sessions of operators and account members. Both
// live in the store so that every node of a cluster knows them: a login on
// one node is valid on all, a logout or a deleted operator on one ends the
// sessions everywhere.

// Operator is a console administrator: it sees and manages every account.
type Operator struct {
	Name         string // login name, lower-case
	PasswordHash string // argon2id in PHC form (auth.HashPassword)
	Created      time.Time
}

// Session kinds: who logged in.
const (
	SessionOperator = "operator" // Subject is an operator name; sees every account
	SessionUser     = "user"     // Subject is a user address; sees its account
	SessionAPIKey   = "apikey"   // Subject is an API key ID; sees its account
)

// Session is a console login. The store keeps only a hash of the session's
// secret identifier (the cookie value): a copy of the database does not
// let anyone log in.
type Session struct {
	IDHash  []byte // SHA-256 of the 256-bit random session ID; unique
	Kind    string // SessionOperator, SessionUser or SessionAPIKey
	Subject string // operator name, user address or API key ID
	Account string // the account seen; "" for operators
	// CSRF is the synchronizer token every state-changing request of the
	// session must carry.
	CSRF     string
	Created  time.Time
	LastSeen time.Time // moved by TouchSession (idle expiry)
	Expires  time.Time // absolute expiry: the session is invalid after it
}

// ConsoleAccess keeps the console's operators and sessions for every node.
type ConsoleAccess interface {
	// AddOperator creates an operator; an existing name returns ErrExists.
	AddOperator(ctx context.Context, o Operator) error
	// GetOperator returns an operator or ErrNotFound.
	GetOperator(ctx context.Context, name string) (Operator, error)
	// ListOperators returns every operator ordered by name.
	ListOperators(ctx context.Context) ([]Operator, error)
	// SetOperatorPassword replaces an operator's hash and ends its
	// sessions; ErrNotFound if unknown.
	SetOperatorPassword(ctx context.Context, name, hash string) error
	// DeleteOperator removes an operator and its sessions; ErrNotFound if
	// unknown.
	DeleteOperator(ctx context.Context, name string) error

	// AddSession stores a new session; an existing IDHash returns
	// ErrExists.
	AddSession(ctx context.Context, s Session) error
	// GetSession returns the session with that ID hash, or ErrNotFound
	// (expiry is the caller's decision: it knows the idle timeout).
	GetSession(ctx context.Context, idHash []byte) (Session, error)
	// TouchSession sets a session's LastSeen to t (never backwards);
	// ErrNotFound if it is gone.
	TouchSession(ctx context.Context, idHash []byte, t time.Time) error
	// DeleteSession ends a session; an unknown one is not an error.
	DeleteSession(ctx context.Context, idHash []byte) error
	// DeleteSessionsOf ends every session of kind and subject (a
	// password changed, a user or key deleted) and returns how many.
	DeleteSessionsOf(ctx context.Context, kind, subject string) (int, error)
	// PruneSessions deletes the sessions whose Expires is before
	// expiredBefore or whose LastSeen is before idleBefore, and returns
	// how many.
	PruneSessions(ctx context.Context, expiredBefore, idleBefore time.Time) (int, error)
}
