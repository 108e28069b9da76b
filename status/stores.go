package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/schemas"
)

// storeState is what the stores say, read once per Gather.
type storeState struct {
	kafkaErr error
	// highWater[stream][partition] is the next offset Kafka will assign.
	highWater map[string]map[int32]int64

	s3Err     error
	manifests map[string]*schemas.Manifest        // view → current run (nil: none published)
	progress  map[string]*schemas.ArchiveProgress // stream → archive progress (nil: none yet)

	chErr error
	// speedNext[view][partition] is one past the highest offset folded into
	// the view's speed rows.
	speedNext map[string]map[int32]int64
	// speedChunks[view][partition][chunk] = speed rows stored for the chunk.
	speedChunks map[string]map[int32]map[int64]uint64
	// newestWindow[view] is the newest window start of its speed rows.
	newestWindow map[string]time.Time
	parts        []partInfo
}

type partInfo struct {
	table, partition string
	parts            uint64
	bytes            uint64
	rows             uint64
}

// stores holds the store clients a Monitor reuses between Gathers.
type stores struct {
	cfg     *schemas.Config
	timeout time.Duration

	mu    sync.Mutex
	db    *clickhouse.DB
	s3    objstore.Bucket
	kafka *kafka.OffsetReader
}

func (st *stores) close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.db != nil {
		st.db.Close()
		st.db = nil
	}
	if st.kafka != nil {
		st.kafka.Close()
	}
}

// read asks Kafka, S3 and ClickHouse at once; each source failing is
// recorded, not fatal.
func (st *stores) read(ctx context.Context) *storeState {
	out := &storeState{}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); out.kafkaErr = st.readKafka(ctx, out) }()
	go func() { defer wg.Done(); out.s3Err = st.readS3(ctx, out) }()
	go func() { defer wg.Done(); out.chErr = st.readClickHouse(ctx, out) }()
	wg.Wait()
	return out
}

func (st *stores) readKafka(ctx context.Context, out *storeState) error {
	ctx, cancel := context.WithTimeout(ctx, st.timeout)
	defer cancel()
	st.mu.Lock()
	if st.kafka == nil {
		sec, err := kafka.NewSecurity(st.cfg.Kafka)
		if err != nil {
			st.mu.Unlock()
			return err
		}
		st.kafka = kafka.NewOffsetReader(st.cfg.Kafka.Brokers, sec, st.timeout, "tandem-status")
	}
	client := st.kafka
	st.mu.Unlock()

	topics := map[string]int{}
	for _, s := range st.cfg.Streams {
		topics[s.Topic] = s.Partitions
	}
	hw, err := client.HighWatermarks(ctx, topics)
	if err != nil {
		return err
	}
	out.highWater = map[string]map[int32]int64{}
	for _, s := range st.cfg.Streams {
		out.highWater[s.Name] = hw[s.Topic]
	}
	return nil
}

func (st *stores) readS3(ctx context.Context, out *storeState) error {
	ctx, cancel := context.WithTimeout(ctx, st.timeout)
	defer cancel()
	st.mu.Lock()
	if st.s3 == nil {
		// One attempt: status reports what it sees now, it does not wait.
		store, err := s3.New(st.cfg.S3, s3.WithRetry(s3.Retry{Attempts: 1}))
		if err != nil {
			st.mu.Unlock()
			return err
		}
		st.s3 = store
	}
	store := st.s3
	st.mu.Unlock()

	out.manifests = map[string]*schemas.Manifest{}
	for _, v := range st.cfg.Views {
		data, err := objstore.GetBytes(ctx, store, schemas.ManifestKey(v.Name))
		switch {
		case errors.Is(err, objstore.ErrNotFound):
			out.manifests[v.Name] = nil
			continue
		case err != nil:
			return fmt.Errorf("reading the manifest of %s from bucket %s at %s: %w", v.Name, st.cfg.S3.Bucket, st.cfg.S3.Endpoint, err)
		}
		m, err := schemas.DecodeManifest(data)
		if err != nil {
			return fmt.Errorf("manifest of %s: %w", v.Name, err)
		}
		out.manifests[v.Name] = m
	}
	out.progress = map[string]*schemas.ArchiveProgress{}
	for _, s := range st.cfg.Streams {
		p, err := readProgress(ctx, store, s.Name)
		if err != nil {
			return err
		}
		out.progress[s.Name] = p
	}
	return nil
}

// readProgress reads the archiver's progress object of a stream (nil when
// the archiver has not written one yet).
func readProgress(ctx context.Context, store objstore.Bucket, stream string) (*schemas.ArchiveProgress, error) {
	data, err := objstore.GetBytes(ctx, store, schemas.ArchiveProgressKey(stream))
	if errors.Is(err, objstore.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the archive progress of %s: %w", stream, err)
	}
	var p schemas.ArchiveProgress
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("archive progress of %s: %w", stream, err)
	}
	return &p, nil
}

func (st *stores) readClickHouse(ctx context.Context, out *storeState) error {
	ctx, cancel := context.WithTimeout(ctx, st.timeout)
	defer cancel()
	st.mu.Lock()
	if st.db == nil {
		db, err := clickhouse.Open(ctx, st.cfg.ClickHouse)
		if err != nil {
			st.mu.Unlock()
			return err
		}
		st.db = db
	}
	db := st.db
	st.mu.Unlock()
	err := st.queryClickHouse(ctx, db, out)
	if err != nil && db.Ping(ctx) != nil {
		// A dead connection pool: open a fresh one next time.
		st.mu.Lock()
		if st.db == db {
			st.db = nil
			db.Close()
		}
		st.mu.Unlock()
	}
	return err
}

func (st *stores) queryClickHouse(ctx context.Context, db *clickhouse.DB, out *storeState) error {
	conn, database := db.Conn(), db.Database()
	out.speedNext = map[string]map[int32]int64{}
	out.speedChunks = map[string]map[int32]map[int64]uint64{}
	out.newestWindow = map[string]time.Time{}
	for _, v := range st.cfg.Views {
		table := fmt.Sprintf("`%s`.`%s`", database, clickhouse.SpeedTable(v.Name))
		rows, err := conn.Query(ctx, fmt.Sprintf(
			"SELECT toUInt32(kafka_partition), toUInt64(chunk), count(), max(toUInt64(version)), toUInt32(max(window_start)) FROM %s GROUP BY kafka_partition, chunk", table))
		if err != nil {
			return fmt.Errorf("reading %s: %w", table, err)
		}
		next := map[int32]int64{}
		chunks := map[int32]map[int64]uint64{}
		var newest uint32
		for rows.Next() {
			var p, win uint32
			var chunk, n, version uint64
			if err := rows.Scan(&p, &chunk, &n, &version, &win); err != nil {
				rows.Close()
				return fmt.Errorf("reading %s: %w", table, err)
			}
			if int64(version)+1 > next[int32(p)] {
				next[int32(p)] = int64(version) + 1
			}
			if chunks[int32(p)] == nil {
				chunks[int32(p)] = map[int64]uint64{}
			}
			chunks[int32(p)][int64(chunk)] = n
			newest = max(newest, win)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("reading %s: %w", table, err)
		}
		out.speedNext[v.Name], out.speedChunks[v.Name] = next, chunks
		if newest > 0 {
			out.newestWindow[v.Name] = time.Unix(int64(newest), 0).UTC()
		}
	}
	// bytes_on_disk is in every server version tandem supports (18.16 on).
	rows, err := conn.Query(ctx, "SELECT table, partition, count(), sum(bytes_on_disk), sum(rows) FROM system.parts WHERE active AND database = ? GROUP BY table, partition", database)
	if err != nil {
		return fmt.Errorf("reading system.parts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p partInfo
		if err := rows.Scan(&p.table, &p.partition, &p.parts, &p.bytes, &p.rows); err != nil {
			return fmt.Errorf("reading system.parts: %w", err)
		}
		out.parts = append(out.parts, p)
	}
	return rows.Err()
}
