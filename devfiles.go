// Package tandem holds what the tandem binary carries of the repository:
// the scripts `tandem dev` starts its development services with, so an
// installed binary starts them from any directory.
package tandem

import "embed"

// DevFiles are scripts/clickhouse.sh and scripts/minio.sh with the
// ClickHouse configuration templates they render
// (deploy/local/clickhouse), at their repository paths: the scripts find
// the templates relative to themselves.
//
//go:embed scripts/clickhouse.sh scripts/minio.sh deploy/local/clickhouse/config.xml deploy/local/clickhouse/users.xml
var DevFiles embed.FS
