// Package currentch checks that the SQL the speed layer runs against
// ClickHouse also runs on a current ClickHouse, not only on the 18.16 server
// the other tests start: speed.SQLForCheck's statements, after the
// ClickHouse adapter's DDL, on chdb's current engine (libchdb.so,
// in-process).
//
// The check lives outside speed/ and internal/clickhouse because it joins
// the two: the adapter owns the tables, the speed layer owns its
// statements. Run it with `go test ./e2e/currentch` (it needs
// `make chdb-lib`; skipped under -short).
package currentch
