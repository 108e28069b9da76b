package batch

import (
	"context"
	"log/slog"
	"time"

	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/schemas"
)

// Options are a run's Deps and the Config fields the tests vary in one
// literal, over DefaultConfig: the tests' shorthand for New(…).Run.
type Options struct {
	Config       *schemas.Config
	Store        objstore.Bucket
	ClickHouse   *clickhouse.DB
	Full         bool
	TempDir      string
	Workers      int
	Holder       string
	Log          *slog.Logger
	Now          func() time.Time
	AfterPublish func(ctx context.Context, res *Result) error
	Split        SplitOptions
	// Batch, when set, replaces the batch section of Config (Full,
	// TempDir, Workers, Holder and Split above still apply).
	Batch *Config

	crashBeforeManifest func(view string) error
}

// Run is one run with o.
func Run(ctx context.Context, o Options) (*Result, error) {
	c, err := ConfigFrom(o.Config)
	if err != nil {
		return nil, err
	}
	if o.Batch != nil {
		c = *o.Batch
	}
	c.Full, c.TempDir, c.Workers, c.Holder, c.Split = o.Full, o.TempDir, o.Workers, o.Holder, o.Split
	r, err := New(c, Deps{Schema: o.Config, Store: o.Store, ClickHouse: o.ClickHouse, Log: o.Log, Now: o.Now, AfterPublish: o.AfterPublish})
	if err != nil {
		return nil, err
	}
	r.crashBeforeManifest = o.crashBeforeManifest
	return r.Run(ctx)
}
