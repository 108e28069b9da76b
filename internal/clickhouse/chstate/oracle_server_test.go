package chstate

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// httpEngine talks to a real ClickHouse over its HTTP interface, which
// carries RowBinary both ways on 18.16 (clickhouse-go's native protocol
// has no AggregateFunction column type to send raw states with).
type httpEngine struct {
	base string
	db   string
}

func (h *httpEngine) do(t *testing.T, sql string, body []byte) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// One thread, so an aggregate sees the rows in ORDER BY order: the
	// small set and the TDigest keep insertion order.
	u := "http://" + h.base + "/?" + url.Values{"query": {sql}, "database": {h.db}, "max_threads": {"1"}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s\n%s", sql, out)
	return out
}

func (h *httpEngine) Exec(t *testing.T, sql string) { t.Helper(); h.do(t, sql, nil) }

func (h *httpEngine) Insert(t *testing.T, table, _ string, rows []byte) {
	t.Helper()
	h.do(t, "INSERT INTO "+table+" FORMAT RowBinary", rows)
}

func (h *httpEngine) Query(t *testing.T, sql string) []byte { t.Helper(); return h.do(t, sql, nil) }

// TestOracleClickHouse18 compares Go's states with ClickHouse 18.16's own.
func TestOracleClickHouse18(t *testing.T) {
	srv := testenv.ClickHouse(t)
	e := &httpEngine{base: srv.HTTPAddr, db: "default"}
	e.Exec(t, "CREATE DATABASE IF NOT EXISTS chstate")
	e.db = "chstate"
	runOracle(t, e, false)
}
