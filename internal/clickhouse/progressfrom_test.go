package clickhouse

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSpeedProgressFromEqualsFullScan: the speed progress read from a
// chunk on per partition (SpeedProgressFrom, what serving passes: the
// chunk of the progress it saw last) equals the full scan's
// (SpeedProgress) for any from — the progress's own chunk, older ones,
// chunks past every row (the whole table read again), partitions without
// rows or not listed — while events arrive in order and absorbed chunks'
// rows are deleted (a partition left without rows past from).
func TestSpeedProgressFromEqualsFullScan(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	v := cfg.View("clicks_by_country")
	s := cfg.Stream("clicks")
	const partitions = 3
	evs := makeEvents(s, 2400, partitions, 5)
	rng := rand.New(rand.NewPCG(17, 19))
	sent := 0
	absorbed := map[int32]int64{}
	checked, fromLast := 0, 0
	for round := 0; round < 30; round++ {
		if sent < len(evs) {
			n := min(len(evs)-sent, 1+rng.IntN(200))
			require.NoError(t, db.InsertSpeedRows(ctx, v, speedRows(v, evs[sent:sent+n], cfg.ChunkSize)))
			sent += n
		}
		if rng.IntN(5) == 0 {
			p := int32(rng.IntN(partitions))
			absorbed[p] += int64(rng.IntN(4))
			require.NoError(t, db.DeleteAbsorbedSpeedRows(ctx, v, absorbed))
		}
		full, err := db.SpeedProgress(ctx, v)
		require.NoError(t, err)
		for k := 0; k < 6; k++ {
			from := map[int32]int64{}
			for p := int32(0); p < partitions+1; p++ {
				switch rng.IntN(5) {
				case 0: // not listed: read whole
				case 1, 2: // the chunk of the progress seen (as serving passes it)
					from[p] = full[p] / cfg.ChunkSize
					fromLast++
				case 3:
					from[p] = int64(rng.IntN(10))
				case 4: // past every row
					from[p] = full[p]/cfg.ChunkSize + 1 + int64(rng.IntN(3))
				}
			}
			got, err := db.SpeedProgressFrom(ctx, v, from)
			require.NoError(t, err)
			require.Equal(t, full, got, "round %d, from %v", round, from)
			checked++
		}
	}
	require.Positive(t, fromLast)
	require.Equal(t, 180, checked)
}

// TestChunksFromConditionUsesTheKey: the condition selects exactly the
// chunks from from[p] on of each listed partition and every other
// partition whole, and ClickHouse reads only their granules (bounded with
// max_rows_to_read).
func TestChunksFromConditionUsesTheKey(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := openTest(t, cfg)
	ctx := testCtx(t)
	const parts, chunks, perChunk = 5, 40, 8
	require.NoError(t, db.Conn().Exec(ctx, "CREATE TABLE default.pfrom (kafka_partition UInt32, chunk UInt64, n UInt64) ENGINE = MergeTree ORDER BY (kafka_partition, chunk) SETTINGS index_granularity = 8"))
	require.NoError(t, db.Conn().Exec(ctx, fmt.Sprintf("INSERT INTO default.pfrom SELECT toUInt32(intDiv(number, %d)), toUInt64(intDiv(number, %d) %% %d), number FROM system.numbers LIMIT %d",
		perChunk*chunks, perChunk, chunks, parts*chunks*perChunk)))
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 30; i++ {
		from := map[int32]int64{}
		for p := int32(0); p < parts; p++ {
			if rng.IntN(6) > 0 {
				from[p] = chunks - 1 - int64(rng.IntN(3))
			}
		}
		cond, err := chunksFromCondition(from)
		require.NoError(t, err)
		var want []string
		for p := int32(0); p < parts; p++ {
			for c := int64(0); c < chunks; c++ {
				if k, listed := from[p]; !listed || c >= k {
					want = append(want, fmt.Sprintf("%d|%d", p, c))
				}
			}
		}
		if cond == "" {
			require.Len(t, want, parts*chunks)
			continue
		}
		bound := 2 * (len(want) + parts) * perChunk // a granule before or after a range, too
		if bound >= parts*chunks*perChunk {
			bound = 0
		}
		got := queryStrings(t, db, fmt.Sprintf("SELECT DISTINCT concat(toString(kafka_partition), '|', toString(chunk)) AS k FROM default.pfrom WHERE %s ORDER BY kafka_partition, chunk SETTINGS max_rows_to_read = %d", cond, bound))
		require.Equal(t, want, got, "%s", cond)
	}
	cond, err := chunksFromCondition(map[int32]int64{1: 7, 2: 3})
	require.NoError(t, err)
	require.Equal(t, "(kafka_partition < 1 OR kafka_partition > 2 OR (kafka_partition = 1 AND chunk >= 7) OR (kafka_partition = 2 AND chunk >= 3))", cond)
}
