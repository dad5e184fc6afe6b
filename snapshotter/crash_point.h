// SPDX-License-Identifier: Apache-2.0
// Test hook for the crash test: when the environment variable CFN_SNAPSHOTTER_CRASH_AT
// names a point, the process raises SIGKILL when it reaches that point. The points:
//
//   prepare-after-mkdir   Prepare/View: the snapshot's directory exists under its id
//                         (renamed from new-XXXXXX), its row is inserted but the
//                         transaction is not committed. After restart: no row, a
//                         directory that no row owns (Cleanup removes it).
//   prepare-after-commit  Prepare/View: row committed, directory in place, no reply sent.
//   commit-before-sql     Commit: usage measured, the SQL transaction not begun.
//   commit-after-sql      Commit: the transaction committed, no reply sent.
//   remove-after-sql      Remove: the row is deleted and committed (not synced), no reply
//                         sent, the directory not yet renamed or removed (Cleanup removes it).
//   remove-before-sync    the store's syncer thread, after a Remove was answered: its delete
//                         committed, not synced; the directory still at its id.
//
// The variable is read once, by init_crash_points() at start; unset, a point costs one
// branch on a bool.
#pragma once

#include <string_view>

namespace snapshotter {

void init_crash_points();
// Raise SIGKILL when `point` is the configured one.
void crash_point(std::string_view point);

}  // namespace snapshotter
