// Package clickhouse is tandem's adapter for ClickHouse: the DDL of every
// table and view tandem keeps there (DDL, Migrate), and the queries the
// speed, batch and serving layers run against them.
//
// It speaks the native protocol through clickhouse-go v2 and stays in the SQL
// subset that both ClickHouse 18.16 (the server the tests run) and current
// ClickHouse accept. Newer syntax (TTL, LowCardinality, DateTime64) is used
// only when the connected server's version has it; see Version.
//
// Identifiers (database, tables, columns) come only from a validated
// schemas.Config, whose names are lower-case letters, digits and '_'; they
// are quoted anyway. Values a user controls are bound with '?' parameters or
// are numbers the adapter formats itself.
package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"

	"github.com/tandem-analytics/tandem/schemas"
)

// Connection limits. ClickHouse answers tandem's queries in milliseconds to
// seconds; the read timeout covers a large batch load or a FINAL scan on a
// busy server, and stops a dead server from hanging a caller forever.
const (
	dialTimeout  = 5 * time.Second
	readTimeout  = 2 * time.Minute
	maxOpenConns = 8
	maxIdleConns = 4
)

// DB is a connection pool to one ClickHouse server, bound to tandem's
// database. It is safe for concurrent use.
type DB struct {
	conn    driver.Conn
	db      string
	version Version
	// cluster is clickhouse.cluster ("": one server). On a cluster the
	// sharded tables' rows live in local tables (LocalTable) on each
	// server, under Distributed tables of the plain names.
	cluster string
	// servers are connections to every server of the cluster, in
	// system.clusters order: DDL, ALTERs of the local tables and writes
	// of the shared tables go to each (forEach). nil without a cluster,
	// and in the DB forEach hands out for one server.
	servers []*DB
	addr    string
	// shard is the shard_num of this server in the cluster (servers),
	// replicated is clickhouse.replicated.
	shard      uint32
	replicated bool
}

// Open connects to the server cfg names, checks that it answers, and reads
// its version. It does not create the database: Migrate does.
func Open(ctx context.Context, cfg schemas.ClickHouseConfig) (*DB, error) {
	if cfg.Addr == "" {
		return nil, errors.New("clickhouse: no address configured (clickhouse.addr)")
	}
	database := cfg.Database
	if database == "" {
		database = "tandem"
	}
	if !identPattern.MatchString(database) {
		return nil, fmt.Errorf("clickhouse: database name %q must be lower-case letters, digits and _", database)
	}
	// The secure native port takes TLS from the first byte; cfg.Addr must
	// name it (tcp_port_secure), not the plain one.
	db, err := open(ctx, cfg, cfg.Addr, database)
	if err != nil || cfg.Cluster == "" {
		return db, err
	}
	addrs, shards, err := db.clusterServers(ctx, cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	if cfg.Replicated {
		if err := db.checkReplicaSettings(ctx); err != nil {
			db.Close()
			return nil, err
		}
	}
	db.replicated = cfg.Replicated
	for i, a := range addrs {
		s, err := open(ctx, cfg, a, database)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("clickhouse: server %s of cluster %s (clickhouse.cluster): %w", a, cfg.Cluster, err)
		}
		s.version, s.shard, s.replicated = db.version, shards[i], cfg.Replicated
		db.servers = append(db.servers, s)
	}
	return db, nil
}

// open connects to one server.
func open(ctx context.Context, cfg schemas.ClickHouseConfig, addr, database string) (*DB, error) {
	tlsCfg, err := cfg.TLS.Load("clickhouse.tls")
	if err != nil {
		return nil, fmt.Errorf("clickhouse: %w", err)
	}
	var settings clickhouse.Settings
	if cfg.Cluster != "" {
		// An insert into a Distributed table returns once every shard has
		// its rows, not when they are queued on this server: the batch
		// load counts the rows right after, and the speed layer commits
		// Kafka offsets only for rows that are stored.
		settings = clickhouse.Settings{"insert_distributed_sync": 1}
	}

	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:     []string{addr},
		Settings: settings,
		TLS:      tlsCfg,
		// "default" always exists; tandem's own database may not yet, and
		// every query names its tables fully.
		Auth:            clickhouse.Auth{Database: "default", Username: cfg.Username, Password: cfg.Password},
		DialTimeout:     dialTimeout,
		ReadTimeout:     readTimeout,
		MaxOpenConns:    maxOpenConns,
		MaxIdleConns:    maxIdleConns,
		ConnMaxLifetime: time.Hour,
		Compression:     &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse: connecting to %s: %w", addr, err)
	}
	db := &DB{conn: conn, db: database, cluster: cfg.Cluster, addr: addr}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse: %s does not answer: %w", addr, err)
	}
	var raw string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&raw); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse: reading the server version: %w", err)
	}
	if db.version, err = ParseVersion(raw); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse: %w", err)
	}
	return db, nil
}

// checkReplicaSettings refuses a replicated cluster whose user profile
// lets reads and writes go to any replica: they must go to the first
// healthy replica of each shard (remote_servers order), from whichever
// server they come, so a read sees what was written before it, as on one
// server. The native protocol of 18.16 cannot carry these (string) settings
// per query, so the profile sets them. Not insert_quorum instead: on
// 18.16 the last quorum-inserted part of a partition is never mutated,
// and deleting absorbed speed rows would wait forever.
func (db *DB) checkReplicaSettings(ctx context.Context) error {
	var balancing, preferLocal string
	err := db.conn.QueryRow(ctx, "SELECT anyIf(value, name = 'load_balancing'), anyIf(value, name = 'prefer_localhost_replica') FROM system.settings").Scan(&balancing, &preferLocal)
	if err != nil {
		return fmt.Errorf("clickhouse: reading the settings of %s: %w", db.addr, err)
	}
	if balancing != "in_order" || preferLocal != "0" {
		return fmt.Errorf("clickhouse: clickhouse.replicated needs load_balancing = 'in_order' and prefer_localhost_replica = 0 in the profile of clickhouse.username on every server "+
			"(docs/operations.md, \"Running ClickHouse as a cluster\"); the server at %s has %q and %s", db.addr, balancing, preferLocal)
	}
	return nil
}

// clusterServers returns the address of every server of the cluster as
// the server at cfg.Addr lists it in system.clusters (host_address and
// port; with clickhouse.tls the cluster's remote_servers must list the
// secure ports), and the shard of each.
func (db *DB) clusterServers(ctx context.Context, cfg schemas.ClickHouseConfig) (addrs []string, shards []uint32, err error) {
	rows, err := db.conn.Query(ctx, "SELECT host_address, toUInt32(port), toUInt32(shard_num) FROM system.clusters WHERE cluster = ? ORDER BY shard_num, replica_num", cfg.Cluster)
	if err != nil {
		return nil, nil, fmt.Errorf("clickhouse: reading cluster %s (clickhouse.cluster) from system.clusters of %s: %w", cfg.Cluster, cfg.Addr, err)
	}
	replicas := map[uint32]int{}
	for rows.Next() {
		var host string
		var p, shard uint32
		if err := rows.Scan(&host, &p, &shard); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("clickhouse: reading cluster %s from system.clusters: %w", cfg.Cluster, err)
		}
		addrs = append(addrs, net.JoinHostPort(host, strconv.Itoa(int(p))))
		shards = append(shards, shard)
		replicas[shard]++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("clickhouse: reading cluster %s from system.clusters: %w", cfg.Cluster, err)
	}
	if len(addrs) == 0 {
		return nil, nil, fmt.Errorf("clickhouse: clickhouse.cluster %q: the server at %s has no such cluster in its remote_servers", cfg.Cluster, cfg.Addr)
	}
	for _, n := range replicas {
		if n > 1 && !cfg.Replicated {
			return nil, nil, fmt.Errorf("clickhouse: cluster %s has shards of several replicas; set clickhouse.replicated (Replicated tables), or list one server per shard", cfg.Cluster)
		}
	}
	return addrs, shards, nil
}

// Cluster returns clickhouse.cluster ("" on one server).
func (db *DB) Cluster() string { return db.cluster }

// local is the table that holds a sharded table's rows on each server:
// LocalTable on a cluster, the table itself on one server.
func (db *DB) local(table string) string {
	if db.cluster == "" {
		return table
	}
	return LocalTable(table)
}

// forEach calls fn with each server of the cluster in turn (a DB bound
// to that server alone), or with db itself on one server. It is what ON
// CLUSTER would do, without the ZooKeeper that ON CLUSTER needs
// (docs/architecture.md, "ClickHouse clusters"). It stops at the first
// error, naming the server.
func (db *DB) forEach(fn func(s *DB) error) error {
	if len(db.servers) == 0 {
		return fn(db)
	}
	for _, s := range db.servers {
		if err := fn(s); err != nil {
			return fmt.Errorf("on server %s: %w", s.addr, err)
		}
	}
	return nil
}

// forEachWriter is forEach for a change that replication carries to the
// other replicas (ALTER … DELETE): on a replicated cluster fn gets the
// first server of each shard, or, for a shared table (replicated on every
// server), the first server alone; otherwise every server.
func (db *DB) forEachWriter(shared bool, fn func(s *DB) error) error {
	if !db.replicated || len(db.servers) == 0 {
		return db.forEach(fn)
	}
	seen := map[uint32]bool{}
	for _, s := range db.servers {
		if seen[s.shard] || (shared && len(seen) > 0) {
			continue
		}
		seen[s.shard] = true
		if err := fn(s); err != nil {
			return fmt.Errorf("on server %s: %w", s.addr, err)
		}
	}
	return nil
}

// replicaSyncTimeout bounds how long a batch load waits for the other
// replicas of a replicated cluster to hold the run it loaded.
const replicaSyncTimeout = 5 * time.Minute

// waitRunReplicated waits, on a replicated cluster, until every replica
// of each shard holds as many rows of the run in table (a sharded table's
// local name) as the shard's first replica: then a reader that fails over
// to another replica after the run is published reads all of it.
func (db *DB) waitRunReplicated(ctx context.Context, table, runID string) error {
	if !db.replicated || len(db.servers) == 0 {
		return nil
	}
	deadline := time.Now().Add(replicaSyncTimeout)
	for {
		want := map[uint32]uint64{}
		behind := ""
		for _, s := range db.servers {
			var n uint64
			if err := s.conn.QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s WHERE run_id = ?", qualified(s.db, table)), runID).Scan(&n); err != nil {
				return fmt.Errorf("clickhouse: counting run %s in %s on %s: %w", runID, table, s.addr, err)
			}
			if w, ok := want[s.shard]; !ok {
				want[s.shard] = n
			} else if n != w && behind == "" {
				behind = fmt.Sprintf("%s holds %d rows of run %s in %s, the shard's first replica %d", s.addr, n, runID, table, w)
			}
		}
		if behind == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("clickhouse: replication did not catch up within %s: %s", replicaSyncTimeout, behind)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Conn returns the underlying connection pool, for queries this package does
// not offer. Do not close it; call DB.Close.
func (db *DB) Conn() driver.Conn { return db.conn }

// Database returns the name of tandem's database.
func (db *DB) Database() string { return db.db }

// ServerVersion returns the version the server reported at Open.
func (db *DB) ServerVersion() Version { return db.version }

// Close closes every connection of the pool.
func (db *DB) Close() error {
	for _, s := range db.servers {
		s.Close()
	}
	return db.conn.Close()
}

// Ping checks that the server answers; readiness checks use it.
func (db *DB) Ping(ctx context.Context) error { return db.conn.Ping(ctx) }

// Version is a ClickHouse server version, major.minor (e.g. 18.16, 24.8).
type Version struct {
	Major, Minor int
}

// Baseline is the oldest server tandem supports, and the version whose DDL
// defines the fingerprints Migrate records: a server upgrade does not change
// what a table means, so it must not change its fingerprint.
var Baseline = Version{18, 16}

// ParseVersion reads "18.16.1", "24.8.4.13" or "26.5.1.1".
func ParseVersion(s string) (Version, error) {
	parts := strings.SplitN(strings.TrimSpace(s), ".", 3)
	if len(parts) < 2 {
		return Version{}, fmt.Errorf("server version %q is not major.minor", s)
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || major < 0 || minor < 0 {
		return Version{}, fmt.Errorf("server version %q is not major.minor", s)
	}
	return Version{major, minor}, nil
}

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// AtLeast reports whether v is major.minor or newer.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

// Feature gates. Each names the release that introduced the feature; older
// servers get the common-subset alternative.

// HasTTL: table TTL (19.6). Without it, raw events expire through
// DB.DeleteExpiredRawEvents.
func (v Version) HasTTL() bool { return v.AtLeast(19, 6) }

// HasLowCardinality: LowCardinality(String) as a production type. It was
// experimental in 18.x and 19.x; 20.1 is the first release where it is on by
// default everywhere tandem cares about.
func (v Version) HasLowCardinality() bool { return v.AtLeast(20, 1) }

// HasDateTime64: millisecond timestamps (20.1). Raw-event timestamps keep
// their milliseconds only on such servers; 18.16 stores whole seconds.
func (v Version) HasDateTime64() bool { return v.AtLeast(20, 1) }

// identPattern is what tandem's config allows as a name (schemas validates
// it too); the adapter checks again before building SQL with a name.
var identPattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// ident quotes a validated identifier.
func ident(name string) string { return "`" + name + "`" }

// table returns the fully qualified, quoted name of a table in db.
func qualified(db, table string) string { return ident(db) + "." + ident(table) }

// quoteString writes s as a ClickHouse string literal. It is used only for
// names from the validated configuration (view names in the merged view's
// definition, where no parameters can be bound).
func quoteString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(s) + "'"
}

// Server error codes that mean "up, but too loaded for this query now":
// the same query may succeed later.
const (
	codeTimeoutExceeded            = 159
	codeTooManySimultaneousQueries = 202
	codeMemoryLimitExceeded        = 241
)

// IsBusy reports whether err is the server refusing or abandoning a query
// for load (too many simultaneous queries, a time or memory limit), as
// opposed to a server that is unreachable or a query that is wrong.
// Serving answers such failures with 503 and Retry-After instead of
// leaving the speed rows out.
func IsBusy(err error) bool {
	var ex *proto.Exception
	if !errors.As(err, &ex) {
		return false
	}
	switch ex.Code {
	case codeTimeoutExceeded, codeTooManySimultaneousQueries, codeMemoryLimitExceeded:
		return true
	}
	return false
}
