package batch

import (
	"context"
	"fmt"
	"math"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/clickhouse/chstate"
	"github.com/tandem-analytics/tandem/schemas"
)

// checkAnalystSQL asks the merged view of v, and its 1d level view, what
// an analyst asks (distinct users and latency quantiles per window and
// country, finalized from the SQL states), when the view holds batch rows
// only, and holds the answers against the truth of the absorbed messages:
// distinct within chstate.DistinctSQLBound (exact up to 16 users); each
// quantile between the values of rank (q ∓ 1%)·n ± ½.
func checkAnalystSQL(t *testing.T, ctx context.Context, db *clickhouse.DB, v *schemas.View, msgs map[int32][]genMsg, absorbed map[int32]int64) {
	t.Helper()
	for _, c := range []struct {
		from string
		gran time.Duration
	}{{v.Name, time.Hour}, {clickhouse.LevelView(v.Name, schemas.Granularity(24*time.Hour)), 24 * time.Hour}} {
		tr, _, _, _ := truth(msgs, absorbed, c.gran, true)
		rows, err := db.Conn().Query(ctx, fmt.Sprintf(`SELECT toInt64(toUInt32(window_start)) * 1000 AS w, country,
			uniqHLL12Merge(users), CAST(quantilesTDigestWeightedMerge(0.5, 0.9, 0.99)(lat) AS Array(Float64))
			FROM %s.%s GROUP BY w, country`, q(db.Database()), q(c.from)))
		require.NoError(t, err)
		n, large := 0, 0
		for rows.Next() {
			var w int64
			var country string
			var d uint64
			var qs []float64
			require.NoError(t, rows.Scan(&w, &country, &d, &qs))
			key := fmt.Sprint(w) + "|" + country
			want := tr[key]
			require.NotNil(t, want, "%s: group %s", c.from, key)
			n++
			u := len(want.Users)
			if u > 16 {
				large++
			}
			require.LessOrEqual(t, math.Abs(float64(d)-float64(u)), chstate.DistinctSQLBound(u), "%s %s: %d users, SQL %d", c.from, key, u, d)
			if len(want.Lat) == 0 {
				continue
			}
			sorted := append([]float64(nil), want.Lat...)
			sort.Float64s(sorted)
			ln := float64(len(sorted))
			for i, lv := range []float64{0.5, 0.9, 0.99} {
				lo := max(int(math.Floor((lv-0.01)*ln-0.5)), 0)
				hi := min(int(math.Ceil((lv+0.01)*ln-0.5)), len(sorted)-1)
				require.True(t, sorted[lo] <= qs[i] && qs[i] <= sorted[hi], "%s %s: p%g = %g outside [%g, %g]", c.from, key, lv*100, qs[i], sorted[lo], sorted[hi])
			}
		}
		require.NoError(t, rows.Err())
		rows.Close()
		require.Equal(t, len(tr), n, "%s: groups", c.from)
		t.Logf("%s: %d groups, %d with more than 16 users", c.from, n, large)
	}
}
