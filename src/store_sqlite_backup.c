/* The SQLite backend's online backup: a consistent copy of the live database in one backup
 * step, for komerce-hookctl backup and for the copy taken before a migration. Runs on the
 * caller's handle; the daemon keeps writing meanwhile (WAL readers do not block the writer). */
#include "store_sqlite_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static int backup_fail(int r, char *err, size_t err_len, const char *what, const char *detail)
{
	snprintf(err, err_len, "%s: %s", what, detail);
	return r;
}

/* Copies every page in one backup step so that the copy is one snapshot. Stepping page by page
 * would let the daemon's commits in between restart the copy, forever under steady load. */
static int backup_copy(struct store *s, sqlite3 *dst, char *err, size_t err_len)
{
	sqlite3_backup *b = sqlite3_backup_init(dst, "main", store_sqlite_db(s), "main");
	int rc;

	if (b == NULL)
		return backup_fail(-EIO, err, err_len, "init", sqlite3_errmsg(dst));
	for (int tries = 0;; tries++) {
		rc = sqlite3_backup_step(b, -1);
		if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || tries >= 100)
			break;
		util_sleep_ms(
			50); /* the busy handler already waited; the source is busy for long */
	}
	sqlite3_backup_finish(b);
	if (rc != SQLITE_DONE)
		return backup_fail(store_sqlite_errno_or_eio(rc), err, err_len, "copy",
				   sqlite3_errstr(rc));
	/* The copy carries the source's WAL flag: make it one self-contained file. */
	rc = sqlite3_exec(dst, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return backup_fail(store_sqlite_errno_or_eio(rc), err, err_len, "journal mode",
				   sqlite3_errmsg(dst));
	return 0;
}

/* Moves the finished copy into place without ever replacing a file that appeared meanwhile:
 * renameat2(RENAME_NOREPLACE), or link + unlink where the file system lacks it. */
static int place_copy(const char *tmp, const char *dest)
{
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dest, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	if (link(tmp, dest) < 0)
		return -1;
	unlink(tmp);
	return 0;
}

int store_sqlite_backup(struct store *s, const char *dest, int64_t *ret_bytes, char *err,
			size_t err_len)
{
	char tmp[4096];
	struct stat sb;
	sqlite3 *dst = NULL;
	int rc, r;

	err[0] = '\0';
	if (stat(dest, &sb) == 0)
		return backup_fail(-EEXIST, err, err_len, dest, "already exists");
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.partial", dest) >= sizeof(tmp))
		return backup_fail(-ENAMETOOLONG, err, err_len, dest, "path too long");
	unlink(tmp); /* left over from an interrupted run */
	rc = sqlite3_open_v2(
		tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		r = backup_fail(store_sqlite_errno_or_eio(rc), err, err_len, tmp,
				dst != NULL ? sqlite3_errmsg(dst) : "out of memory");
		sqlite3_close(dst);
		return r;
	}
	r = backup_copy(s, dst, err, err_len);
	if (sqlite3_close(dst) != SQLITE_OK && r == 0)
		r = backup_fail(-EIO, err, err_len, tmp, "close failed");
	if (r == 0 && place_copy(tmp, dest) < 0) {
		r = -errno;
		if (r == -EEXIST)
			backup_fail(r, err, err_len, dest, "already exists");
		else
			backup_fail(r, err, err_len, dest, "cannot rename the copy into place");
	}
	if (r == 0)
		r = util_fsync_dir(dest);
	if (r < 0) {
		if (err[0] == '\0')
			backup_fail(r, err, err_len, dest, "cannot sync its directory");
		unlink(tmp);
		return r;
	}
	if (stat(dest, &sb) == 0)
		*ret_bytes = (int64_t)sb.st_size;
	return 0;
}
