// Package startup turns the errors of starting Herald, and of a command
// opening the data directory, into one line that says what failed, where
// and what to do, carrying the exit status for that kind of failure
// (internal/exitcode). app.New and the CLI share it, so the same problem
// reads the same everywhere, e.g.
//
//	smtp listener 127.0.0.1:2525: address already in use (is another MTA running? stop it, or change smtp.listen)
//
// Each function keeps the original error reachable (errors.Is, errors.As).
package startup

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/heraldmail/herald/internal/exitcode"
	"github.com/heraldmail/herald/internal/pidlock"
	"github.com/heraldmail/herald/internal/privdrop"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/jackc/pgx/v5/pgconn"
)

// errno returns the system error number in err's chain.
func errno(err error) (syscall.Errno, bool) {
	var en syscall.Errno
	ok := errors.As(err, &en)
	return en, ok
}

// reason is the short cause of err: the errno's text ("address already in
// use"), else the innermost error's text.
func reason(err error) string {
	if en, ok := errno(err); ok {
		return en.Error()
	}
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

// isPerm reports a permission failure.
func isPerm(err error) bool {
	return errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)
}

// whoami names the user this process runs as, for permission hints.
func whoami() (desc, name string) {
	uid := os.Getuid()
	if uid < 0 {
		return "this user", "the herald user"
	}
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return fmt.Sprintf("uid %d (%s)", uid, u.Username), u.Username
	}
	return fmt.Sprintf("uid %d", uid), strconv.Itoa(uid)
}

func describe(code int, what, why, hint string, err error) error {
	msg := what + ": " + why
	if hint != "" {
		msg += " (" + hint + ")"
	}
	return exitcode.New(code, msg, err)
}

// Listener describes a failure to bind addr for a listener section
// ("smtp", "submission", "submissions", "http").
func Listener(section, addr string, err error) error {
	key := section + ".listen"
	switch section { // the ACME listeners have a key of their own
	case "acme_http":
		key = "acme.http_address"
	case "acme_https":
		key = "acme.https_address"
	}
	what := section + " listener " + addr
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		hint := "is another MTA running? stop it, or change " + key
		if section == "http" || section == "acme_http" || section == "acme_https" {
			hint = "is another program using it? stop it, or change " + key
		}
		return describe(exitcode.Unavailable, what, reason(err), hint, err)
	case isPerm(err):
		return describe(exitcode.NoPerm, what, reason(err),
			"ports below 1024 need root or CAP_NET_BIND_SERVICE; with systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE", err)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return describe(exitcode.Unavailable, what, reason(err),
			"no interface has this address: fix "+key+", or start herald after the network is up (systemd: After=network-online.target)", err)
	case errors.As(err, &dnsErr):
		return describe(exitcode.Config, what, reason(err), "use an IP address in "+key, err)
	}
	return describe(exitcode.OSErr, what, reason(err), "check "+key, err)
}

// DataDir describes a failure to create or write the data directory dir
// (err usually a *fs.PathError for dir or a file in it).
func DataDir(dir string, err error) error {
	what := "data directory " + dir
	var pe *fs.PathError
	if errors.As(err, &pe) && filepath.Clean(pe.Path) != filepath.Clean(dir) {
		what += ": " + pe.Path
	}
	code, hint := dataDirHint(dir, err)
	return describe(code, what, reason(err), hint, err)
}

func dataDirHint(dir string, err error) (int, string) {
	switch {
	case isPerm(err):
		me, name := whoami()
		return exitcode.NoPerm, fmt.Sprintf("herald runs as %s, which may not write there: run it as the directory's owner, or chown -R %s %s", me, name, dir)
	case errors.Is(err, syscall.ENOTDIR):
		return exitcode.CantCreat, "a part of the path is a file, not a directory: fix server.data_dir"
	case errors.Is(err, syscall.EISDIR):
		return exitcode.CantCreat, "herald keeps a file of that name: move the directory away"
	case errors.Is(err, syscall.EROFS):
		return exitcode.CantCreat, "the file system is read-only: put server.data_dir on a writable one (systemd: ReadWritePaths=" + dir + ")"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, store.ErrStorageFull):
		return exitcode.CantCreat, "the disk or quota is full: free some space"
	case errors.Is(err, syscall.EIO):
		return exitcode.IOErr, "the disk reported an I/O error: check it (dmesg)"
	}
	return exitcode.CantCreat, "server.data_dir must be a directory herald can create and write"
}

// Lock describes a failure to take the data directory's lock (pidlock):
// another herald serve holds it, or the lock file cannot be written.
func Lock(dir string, err error) error {
	var held *pidlock.HeldError
	if errors.As(err, &held) {
		who := "another herald serve"
		if held.PID > 0 {
			who += ", pid " + strconv.Itoa(held.PID)
		}
		return exitcode.New(exitcode.Unavailable, fmt.Sprintf("data directory %s is in use by %s (stop it first, or give this one its own server.data_dir)", dir, who), err)
	}
	return DataDir(dir, err)
}

// NoStore is the error of a command that only reads when the data directory
// holds no store: it says so rather than creating an empty one.
func NoStore(dir string) error {
	return exitcode.New(exitcode.NoInput, fmt.Sprintf("data directory %s holds no store (nothing was set up there: is server.data_dir right? give --config FILE or HERALD_CONFIG; herald serve or an add command creates it)", dir), fs.ErrNotExist)
}

// Store describes a failure of sqlite.Open on the data directory dir.
func Store(dir string, err error) error {
	db := filepath.Join(dir, "herald.db")
	var tooNew *sqlite.SchemaTooNewError
	var pe *fs.PathError
	switch {
	case errors.As(err, &tooNew):
		return exitcode.New(exitcode.Config, tooNew.Error(), err)
	case errors.Is(err, sqlite.ErrBusy):
		return describe(exitcode.TempFail, "store "+db, "locked by another process",
			"try again; if it persists, see which process holds it: fuser "+db, err)
	case errors.Is(err, sqlite.ErrNotDatabase):
		return describe(exitcode.DataErr, "store "+db, "not a herald database, or damaged",
			"restore it from a backup; moving it away starts an empty store", err)
	case errors.Is(err, sqlite.ErrReadOnly):
		return readOnly(dir, db, err)
	case errors.As(err, &pe), errors.Is(err, store.ErrStorageFull):
		return DataDir(dir, err)
	}
	if _, ok := errno(err); ok {
		return DataDir(dir, err)
	}
	return describe(exitcode.Software, "store "+db, reason(err), "", err)
}

// StoreURL describes a failure of postgres.Open on the database of
// store.url (given as url; its password is never shown).
func StoreURL(url string, err error) error {
	what := "store " + postgres.Redact(url)
	var tooNew *postgres.SchemaTooNewError
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "28P01" || pe.Code == "28000":
			return describe(exitcode.NoPerm, what, "authentication failed",
				"check the user and password of store.url (or ~/.pgpass, PGPASSWORD) and pg_hba.conf", err)
		case pe.Code == "3D000":
			return describe(exitcode.Config, what, "the database does not exist",
				"create it with createdb -O USER DBNAME, or fix store.url", err)
		case pe.Code == "42501":
			return describe(exitcode.NoPerm, what, "permission denied",
				"the user of store.url must own the schema, or have CREATE on it, to create and migrate the tables", err)
		case pe.Code == "53100":
			return describe(exitcode.CantCreat, what, "the database server's disk is full", "free space on it", err)
		}
	}
	var tooOld *postgres.SchemaTooOldError
	switch {
	case errors.As(err, &tooNew):
		return exitcode.New(exitcode.Config, tooNew.Error(), err)
	case errors.As(err, &tooOld):
		return describe(exitcode.Config, what, fmt.Sprintf("schema version %d is older than this herald's (%d)", tooOld.Version, tooOld.Supported),
			"run herald store migrate once, with this herald; nodes of the older version keep running until restarted with it", err)
	case errors.Is(err, postgres.ErrNoSchema):
		return describe(exitcode.Config, what, "the schema of search_path does not exist",
			"create it with CREATE SCHEMA, or fix search_path in store.url", err)
	case errors.Is(err, postgres.ErrNodeInUse):
		return describe(exitcode.Unavailable, what, "another herald serve runs with this server.node_id",
			"give each node its own server.node_id (it defaults to server.hostname): nodes sharing one would release each other's leases; "+
				"if that node's machine died, the database frees its name within about 25 s", err)
	case errors.Is(err, postgres.ErrNoStore):
		return exitcode.New(exitcode.NoInput, what+" holds no herald store (is store.url right? herald serve or an add command creates it)", err)
	case errors.Is(err, postgres.ErrUnavailable):
		return describe(exitcode.Unavailable, what, "cannot connect: "+reason(err),
			"is PostgreSQL running, and are the host and port of store.url right?", err)
	}
	return describe(exitcode.Software, what, reason(err), "", err)
}

// NodeID describes a failure to take the lock of server.node_id (node) on
// the store of url (postgres.Store.LockNode): another running node uses
// the same name.
func NodeID(node, url string, err error) error {
	var inUse *postgres.NodeInUseError
	if errors.As(err, &inUse) {
		who := "another running herald"
		if inUse.Holder != "" {
			who += " (" + inUse.Holder + ")"
		}
		return exitcode.New(exitcode.Unavailable, fmt.Sprintf("server.node_id %q is in use by %s on the store %s (give each node its own server.node_id, or stop the other one first)",
			node, who, postgres.Redact(url)), err)
	}
	return StoreURL(url, err)
}

// readOnly finds out why SQLite could not write: the directory, the file or
// the file system.
func readOnly(dir, db string, err error) error {
	f, perr := os.CreateTemp(dir, ".herald-probe-*")
	if perr != nil {
		if en, ok := errno(perr); ok {
			return DataDir(dir, &fs.PathError{Op: "create", Path: dir, Err: en})
		}
		return DataDir(dir, perr)
	}
	f.Close()
	os.Remove(f.Name())
	f, perr = os.OpenFile(db, os.O_RDWR, 0)
	if perr != nil {
		return DataDir(dir, perr)
	}
	f.Close()
	return describe(exitcode.CantCreat, "store "+db, reason(err),
		"herald must be able to write it and create files beside it (herald.db-wal, herald.db-shm)", err)
}

// TLS describes a failure to load the certificate (tlsconf.New): certFile
// and keyFile as configured ("" for the self-signed one in dataDir).
func TLS(certFile, keyFile, dataDir string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		switch {
		case certFile != "" && pe.Path == certFile:
			return tlsFile("tls.cert_file", certFile, "the PEM certificate chain", err)
		case keyFile != "" && pe.Path == keyFile:
			return tlsFile("tls.key_file", keyFile, "the PEM private key", err)
		case certFile == "" && inside(dataDir, pe.Path):
			return DataDir(dataDir, err)
		}
	}
	if certFile == "" {
		return describe(exitcode.Config, "self-signed certificate in "+filepath.Join(dataDir, "tls"), reason(err),
			"delete that directory to generate a new one", err)
	}
	return describe(exitcode.Config, "tls.cert_file "+certFile+" and tls.key_file "+keyFile, reason(err),
		"they must be a PEM certificate chain and its private key", err)
}

func tlsFile(key, path, want string, err error) error {
	what := key + " " + path
	switch {
	case isPerm(err):
		me, name := whoami()
		return describe(exitcode.NoPerm, what, reason(err),
			fmt.Sprintf("herald runs as %s: make the file readable by it, e.g. chgrp %s %s && chmod g+r %s", me, name, path, path), err)
	case errors.Is(err, syscall.EISDIR):
		return describe(exitcode.NoInput, what, reason(err), key+" must name "+want+" file, not a directory", err)
	case errors.Is(err, syscall.EIO):
		return describe(exitcode.IOErr, what, reason(err), "the disk reported an I/O error: check it (dmesg)", err)
	}
	return describe(exitcode.NoInput, what, reason(err),
		"fix "+key+", or leave tls.cert_file and tls.key_file empty for a self-signed certificate", err)
}

// inside reports whether path is dir or below it.
func inside(dir, path string) bool {
	if dir == "" {
		return false
	}
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// Resolver describes a failure to set up the DNS client for server (""
// means /etc/resolv.conf).
func Resolver(server string, err error) error {
	if server == "" {
		return describe(exitcode.OSFile, "dns resolver /etc/resolv.conf", reason(err),
			`set dns.resolver to a resolver's "ip:port", e.g. "127.0.0.1:53" for a local unbound`, err)
	}
	return describe(exitcode.Config, "dns.resolver "+server, reason(err), `give "ip:port", e.g. "127.0.0.1:53"`, err)
}

// KeyFile describes a failure to load or create a key file kept in the
// data directory (the VERP key).
func KeyFile(name, path, dataDir string, err error) error {
	_, isErrno := errno(err)
	switch {
	case errors.Is(err, syscall.EISDIR):
		return describe(exitcode.CantCreat, name+" "+path, reason(err), "it must be a file: move the directory away to generate a new key", err)
	case isErrno:
		return DataDir(dataDir, err)
	}
	return describe(exitcode.DataErr, name+" "+path, reason(err), "move it away to generate a new one", err)
}

// LogFile describes a failure to open log.file.
func LogFile(path string, err error) error {
	what := "log file " + path
	if isPerm(err) {
		me, _ := whoami()
		return describe(exitcode.NoPerm, what, reason(err),
			"herald runs as "+me+": make the file and its directory writable by it, or leave log.file empty to log to stderr", err)
	}
	code, _ := dataDirHint("", err)
	if code == exitcode.NoPerm {
		code = exitcode.CantCreat
	}
	return describe(code, what, reason(err),
		"log.file must be a file herald can create and append to, in an existing directory; empty logs to stderr", err)
}

// User describes a failure to switch to server.user after binding.
func User(name string, err error) error {
	if name == "" {
		name = privdrop.DefaultUser
	}
	if errors.Is(err, privdrop.ErrNoUser) {
		return describe(exitcode.NoUser, "server.user "+strconv.Quote(name), "no such user",
			"create it (useradd --system --home-dir /var/lib/herald "+name+") or set server.user to an existing unprivileged user", err)
	}
	return describe(exitcode.NoPerm, "switching to user "+name, reason(err),
		"the data directory and log file must be on a file system where root may change owners", err)
}
