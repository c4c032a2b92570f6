package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// PGHerald is Herald on PostgreSQL: one or more `herald serve` nodes
// (server.node_id "bench-<run>-<n>") sharing one schema of the -store-url
// database. A fresh start drops the previous run's schema and creates an
// empty one (the first node creates the tables); Close drops it.
type PGHerald struct {
	Nodes   []*Herald
	BaseURL string // -store-url
	name    string
	prefix  string // node IDs start with it

	mu     sync.Mutex
	schema string
}

// NewPGHerald returns n nodes on PostgreSQL at baseURL; ports holds two
// free ports per node (relay, submission).
func NewPGHerald(name, bin, dir, baseURL string, n int, ports []int, sinkPort int) *PGHerald {
	var b [4]byte
	_, _ = rand.Read(b[:])
	c := &PGHerald{BaseURL: baseURL, name: name, prefix: "bench-" + hex.EncodeToString(b[:])}
	for i := range n {
		c.Nodes = append(c.Nodes, &Herald{Bin: bin, Dir: filepath.Join(dir, fmt.Sprintf("node%d", i+1)),
			Port: ports[2*i], SubPort: ports[2*i+1], SinkPort: sinkPort, NodeID: fmt.Sprintf("%s-%d", c.prefix, i+1)})
	}
	return c
}

// Name implements MTA.
func (c *PGHerald) Name() string { return c.name }

// admin connects to the -store-url database for schema work.
func (c *PGHerald) admin(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, c.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("-store-url: %w", err)
	}
	return conn, nil
}

// withSchema returns the base URL with search_path set to schema.
func (c *PGHerald) withSchema(schema string) (string, error) {
	u, err := url.Parse(c.BaseURL)
	if err != nil || u.Scheme == "" {
		return "", fmt.Errorf("-store-url must be a postgres:// URL")
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// dropSchema drops the current run's schema, if any.
func (c *PGHerald) dropSchema(ctx context.Context) error {
	c.mu.Lock()
	schema := c.schema
	c.schema = ""
	c.mu.Unlock()
	if schema == "" {
		return nil
	}
	conn, err := c.admin(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
	return err
}

// Start implements MTA: fresh means a new, empty schema.
func (c *PGHerald) Start(fresh bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.mu.Lock()
	have := c.schema != ""
	c.mu.Unlock()
	if fresh || !have {
		if err := c.dropSchema(ctx); err != nil {
			return err
		}
		var b [6]byte
		_, _ = rand.Read(b[:])
		schema := "herald_bench_" + hex.EncodeToString(b[:])
		conn, err := c.admin(ctx)
		if err != nil {
			return err
		}
		_, err = conn.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize())
		conn.Close(context.Background())
		if err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
		c.mu.Lock()
		c.schema = schema
		c.mu.Unlock()
		u, err := c.withSchema(schema)
		if err != nil {
			return err
		}
		for _, h := range c.Nodes {
			h.StoreURL = u
		}
	}
	// The first node creates the tables; the others then start together.
	if err := c.Nodes[0].Start(fresh); err != nil {
		return err
	}
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, h := range c.Nodes[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i+1] = h.Start(fresh)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Stop()
		return err
	}
	return nil
}

// Stop implements MTA: every node, concurrently.
func (c *PGHerald) Stop() error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, h := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = h.Stop()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Close drops the last run's schema.
func (c *PGHerald) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return c.dropSchema(ctx)
}

// Root implements MTA: the first node.
func (c *PGHerald) Root() int { return c.Nodes[0].Root() }

// Pids implements MTA: every node's process.
func (c *PGHerald) Pids() []int {
	var out []int
	for _, h := range c.Nodes {
		out = append(out, h.Pids()...)
	}
	return out
}

// Addr implements MTA: the first node's relay listener.
func (c *PGHerald) Addr() string { return c.Nodes[0].Addr() }

// Addrs implements MTA: every node's relay listener.
func (c *PGHerald) Addrs() []string {
	var out []string
	for _, h := range c.Nodes {
		out = append(out, h.Addr())
	}
	return out
}

// SubAddr implements heraldMTA.
func (c *PGHerald) SubAddr() string { return c.Nodes[0].SubAddr() }

// AddUser implements heraldMTA, through the first node's configuration.
func (c *PGHerald) AddUser(domain, user, pass string) error {
	return c.Nodes[0].AddUser(domain, user, pass)
}

// SetProfile implements heraldMTA.
func (c *PGHerald) SetProfile(bin, out string) {
	for i, h := range c.Nodes {
		o := out
		if o != "" && len(c.Nodes) > 1 {
			ext := filepath.Ext(o)
			o = strings.TrimSuffix(o, ext) + fmt.Sprintf("-node%d", i+1) + ext
		}
		h.SetProfile(bin, o)
	}
}

// DBPids implements heraldMTA: the PostgreSQL backends serving this
// variant's nodes (pool, writer and listener connections), found by
// their application_name "herald NODE ...". Backends are processes of
// the database server: readable in /proc when it runs on this machine.
func (c *PGHerald) DBPids() []int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.admin(ctx)
	if err != nil {
		return nil
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1`, "herald "+c.prefix+"-%")
	if err != nil {
		return nil
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil
	}
	out := make([]int, len(pids))
	for i, p := range pids {
		out[i] = int(p)
	}
	return out
}
