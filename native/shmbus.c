/*
 * shmbus native addon: the thin syscall layer under src/native/binding.ts, which declares
 * the contract of every function here. Files in /dev/shm, mmap as external ArrayBuffers,
 * shared (non-private) futexes, a futex waiter thread that reports into the event loop, an
 * io_uring futex waiter whose fd the event loop polls, eventfd + uv_poll, OFD byte-range
 * locks, unix sockets that pass fds (SCM_RIGHTS) and report peer credentials. No ring or
 * protocol logic lives in C.
 *
 * Threads: every exported function runs on the JS thread that called it (main thread or
 * a worker; the addon is context-aware and keeps no global JS state). The only other
 * threads are the waiter threads, which touch nothing but their waiter_t under its mutex,
 * the futex syscalls and uv_async_send.
 *
 * Errors: system errors are shaped like Node's (code, errno < 0, syscall, path); argument
 * errors are TypeError ERR_INVALID_ARG_TYPE / RangeError ERR_OUT_OF_RANGE.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <linux/io_uring.h>
#include <node_api.h>
#include <uv.h>

/* Results of futexWait and of a waiter's callback (src/native/binding.ts WAIT_*). */
#define WAIT_WOKEN 0
#define WAIT_NOT_EQUAL 1
#define WAIT_TIMED_OUT 2
#define WAIT_CANCELLED 3
/* Only for waiters: FUTEX_WAIT failed (EFAULT: the word is no longer mapped, ...). */
#define WAIT_ERROR 4

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449 /* same number on every architecture (Linux 5.16) */
#endif

/* Largest integer a JS number holds exactly (Number.MAX_SAFE_INTEGER). */
#define MAX_SAFE_INTEGER 9007199254740991.0

/* A waiter thread only parks in syscalls: a small stack is plenty. */
#define WAITER_STACK_SIZE (64 * 1024)

#define CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* Type tags of the three externals, so a handle of one kind is never taken for another. */
static const napi_type_tag MAPPING_TAG = {0x5348424d41505049ULL, 0x4e47000000000001ULL};
static const napi_type_tag WAITER_TAG = {0x5348424d57414954ULL, 0x4552000000000001ULL};
static const napi_type_tag POLL_TAG = {0x5348424d504f4c4cULL, 0x0000000000000001ULL};
static const napi_type_tag URING_TAG = {0x5348424d5552494eULL, 0x4700000000000001ULL};

/* ---------------------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------------------- */

/* Turns a failed Node-API call into a JS exception (unless one is already pending). */
static napi_value fail_napi(napi_env env)
{
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info);
  const char *message = info && info->error_message ? info->error_message : "Node-API call failed";
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending)
    napi_throw_error(env, NULL, message);
  return NULL;
}

#define TRY(call)                                                                                 \
  do {                                                                                            \
    if ((call) != napi_ok)                                                                        \
      return fail_napi(env);                                                                      \
  } while (0)

/*
 * Throws an Error shaped like Node's system errors:
 *   EEXIST: file already exists, open '/dev/shm/x'   {code, errno: -17, syscall, path}
 * `err` is a positive errno value; `detail`, if not NULL, replaces libuv's description of it
 * when the errno alone would mislead (EMSGSIZE for truncated control data, not data).
 */
static void throw_system_detail(napi_env env, int err, const char *syscall_name, const char *path,
                                const char *detail)
{
  char name[64], description[128], message[PATH_MAX + 256];
  uv_err_name_r(-err, name, sizeof name);
  if (detail)
    snprintf(description, sizeof description, "%s", detail);
  else
    uv_strerror_r(-err, description, sizeof description);
  if (path)
    snprintf(message, sizeof message, "%s: %s, %s '%s'", name, description, syscall_name, path);
  else
    snprintf(message, sizeof message, "%s: %s, %s", name, description, syscall_name);

  napi_value code, text, error, value;
  if (napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &text) != napi_ok ||
      napi_create_error(env, code, text, &error) != napi_ok) {
    fail_napi(env);
    return;
  }
  if (napi_create_int32(env, -err, &value) == napi_ok)
    napi_set_named_property(env, error, "errno", value);
  if (napi_create_string_utf8(env, syscall_name, NAPI_AUTO_LENGTH, &value) == napi_ok)
    napi_set_named_property(env, error, "syscall", value);
  if (path && napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &value) == napi_ok)
    napi_set_named_property(env, error, "path", value);
  napi_throw(env, error);
}

static void throw_system(napi_env env, int err, const char *syscall_name, const char *path)
{
  throw_system_detail(env, err, syscall_name, path, NULL);
}

static void throw_range(napi_env env, const char *format, ...)
{
  char message[256];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof message, format, args);
  va_end(args);
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", message);
}

static const char *type_name(napi_valuetype type)
{
  static const char *const names[] = {"undefined", "null",     "boolean", "number",  "string",
                                      "symbol",    "object",   "function", "external", "bigint"};
  return (unsigned)type < sizeof names / sizeof names[0] ? names[type] : "unknown";
}

static void throw_type(napi_env env, const char *name, const char *expected, napi_value received)
{
  napi_valuetype type = napi_undefined;
  napi_typeof(env, received, &type);
  char message[256];
  snprintf(message, sizeof message, "The \"%s\" argument must be %s. Received type %s", name, expected,
           type_name(type));
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
}

/* ---------------------------------------------------------------------------------------
 * Arguments: each helper returns false with an exception pending.
 * ------------------------------------------------------------------------------------- */

/* Fills argv[0..n); missing arguments read as undefined. */
static bool get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv)
{
  size_t argc = n;
  return napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok;
}

static bool arg_number(napi_env env, napi_value value, const char *name, double *out)
{
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_number) {
    throw_type(env, name, "of type number", value);
    return false;
  }
  napi_get_value_double(env, value, out);
  return true;
}

/* An integer in [min, max], like Node's validateInteger. */
static bool arg_integer(napi_env env, napi_value value, const char *name, double min, double max, double *out)
{
  if (!arg_number(env, value, name, out))
    return false;
  if (*out != floor(*out) || *out < min || *out > max) {
    throw_range(env, "The value of \"%s\" is out of range. It must be an integer >= %.0f and <= %.0f. Received %g",
                name, min, max, *out);
    return false;
  }
  return true;
}

static bool arg_fd(napi_env env, napi_value value, int *fd)
{
  double d;
  if (!arg_integer(env, value, "fd", 0, INT_MAX, &d))
    return false;
  *fd = (int)d;
  return true;
}

static bool arg_bool(napi_env env, napi_value value, const char *name, bool *out)
{
  if (napi_get_value_bool(env, value, out) != napi_ok) {
    throw_type(env, name, "of type boolean", value);
    return false;
  }
  return true;
}

static bool arg_function(napi_env env, napi_value value, const char *name)
{
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_function) {
    throw_type(env, name, "of type function", value);
    return false;
  }
  return true;
}

/*
 * A path as a NUL-terminated string; paths that do not fit PATH_MAX fail like the syscall
 * that would have taken them (ENAMETOOLONG from `syscall_name`).
 */
static bool arg_path_for(napi_env env, napi_value value, const char *syscall_name, char path[PATH_MAX])
{
  size_t length;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok) {
    throw_type(env, "path", "of type string", value);
    return false;
  }
  if (length >= PATH_MAX) {
    throw_system(env, ENAMETOOLONG, syscall_name, NULL);
    return false;
  }
  napi_get_value_string_utf8(env, value, path, PATH_MAX, &length);
  if (strlen(path) != length) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "The \"path\" argument must not contain null bytes");
    return false;
  }
  return true;
}

static bool arg_path(napi_env env, napi_value value, char path[PATH_MAX])
{
  return arg_path_for(env, value, "open", path);
}

/* The pointer inside an external created by this addon with `tag`. */
static bool arg_handle(napi_env env, napi_value value, const napi_type_tag *tag, const char *name,
                       const char *expected, void **out)
{
  napi_valuetype type;
  bool tagged = false;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_external ||
      napi_check_object_type_tag(env, value, tag, &tagged) != napi_ok || !tagged) {
    throw_type(env, name, expected, value);
    return false;
  }
  return napi_get_value_external(env, value, out) == napi_ok;
}

/*
 * Data pointer and length of an ArrayBuffer or a SharedArrayBuffer. Node 20's Node-API
 * has no accessor for a SharedArrayBuffer, but a Uint8Array over it does (and allocates):
 * the identity check proves the view really sits on `value`. `detachable` tells which.
 */
static bool buffer_info(napi_env env, napi_value value, void **data, size_t *length, bool *detachable)
{
  bool is_buffer = false;
  napi_is_arraybuffer(env, value, &is_buffer);
  if (is_buffer) {
    *detachable = true;
    return napi_get_arraybuffer_info(env, value, data, length) == napi_ok;
  }
  *detachable = false;
  napi_value global, shared_ctor, u8_ctor, view, backing;
  bool is_shared = false, same = false;
  napi_typedarray_type type;
  size_t offset;
  napi_valuetype value_type;
  if (napi_typeof(env, value, &value_type) == napi_ok && value_type == napi_object &&
      napi_get_global(env, &global) == napi_ok &&
      napi_get_named_property(env, global, "SharedArrayBuffer", &shared_ctor) == napi_ok &&
      napi_instanceof(env, value, shared_ctor, &is_shared) == napi_ok && is_shared &&
      napi_get_named_property(env, global, "Uint8Array", &u8_ctor) == napi_ok &&
      napi_new_instance(env, u8_ctor, 1, &value, &view) == napi_ok &&
      napi_get_typedarray_info(env, view, &type, length, data, &backing, &offset) == napi_ok &&
      napi_strict_equals(env, backing, value, &same) == napi_ok && same && type == napi_uint8_array &&
      offset == 0)
    return true;
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending)
    throw_type(env, "buffer", "an instance of ArrayBuffer or SharedArrayBuffer", value);
  return false;
}

/* The address of a 4-byte aligned futex word inside a buffer of `length` bytes. */
static bool word_at(napi_env env, void *data, size_t length, double offset, uint32_t **word)
{
  if (offset != floor(offset) || fmod(offset, 4) != 0 || offset < 0 || offset + 4 > (double)length ||
      data == NULL) {
    throw_range(env,
                "The value of \"byteOffset\" is out of range. It must be a multiple of 4 and >= 0 and <= %.0f "
                "(byteLength %zu). Received %g",
                length >= 4 ? (double)(length - 4) : -1.0, length, offset);
    return false;
  }
  uintptr_t address = (uintptr_t)data + (size_t)offset;
  if (address % 4 != 0) { /* a heap buffer is always 8-aligned: this is only a guard */
    throw_range(env, "The futex word at byteOffset %g is not 4-byte aligned in memory", offset);
    return false;
  }
  *word = (uint32_t *)address;
  return true;
}

static bool arg_word(napi_env env, napi_value buffer, napi_value offset_value, double *offset, uint32_t **word,
                     bool *detachable)
{
  void *data;
  size_t length;
  return buffer_info(env, buffer, &data, &length, detachable) &&
         arg_number(env, offset_value, "byteOffset", offset) && word_at(env, data, length, *offset, word);
}

/* A futex value: the Int32 or Uint32 reading of the same 32 bits. */
static bool arg_futex_value(napi_env env, napi_value value, uint32_t *out)
{
  double d;
  if (!arg_integer(env, value, "expected", INT32_MIN, UINT32_MAX, &d))
    return false;
  *out = d < 0 ? (uint32_t)(int32_t)d : (uint32_t)d;
  return true;
}

/* Milliseconds; negative or +Infinity means no timeout. */
static bool arg_timeout(napi_env env, napi_value value, double *ms)
{
  if (!arg_number(env, value, "timeoutMs", ms))
    return false;
  if (isnan(*ms)) {
    throw_range(env, "The value of \"timeoutMs\" is out of range. It must be a number. Received NaN");
    return false;
  }
  return true;
}

/* ---------------------------------------------------------------------------------------
 * Small builders
 * ------------------------------------------------------------------------------------- */

static napi_value make_number(napi_env env, double value)
{
  napi_value result;
  TRY(napi_create_double(env, value, &result));
  return result;
}

static napi_value make_bool(napi_env env, bool value)
{
  napi_value result;
  TRY(napi_get_boolean(env, value, &result));
  return result;
}

static napi_value make_undefined(napi_env env)
{
  napi_value result;
  TRY(napi_get_undefined(env, &result));
  return result;
}

/* [size, dev, ino, uid, mode] */
static napi_value make_stat(napi_env env, const struct stat *st)
{
  const double fields[] = {(double)st->st_size, (double)st->st_dev, (double)st->st_ino, (double)st->st_uid,
                           (double)st->st_mode};
  napi_value array, value;
  TRY(napi_create_array_with_length(env, 5, &array));
  for (uint32_t i = 0; i < 5; i++) {
    TRY(napi_create_double(env, fields[i], &value));
    TRY(napi_set_element(env, array, i, value));
  }
  return array;
}

/*
 * Calls a JS callback from a libuv callback (no JS on the stack). napi_make_callback runs
 * the nextTick and microtask queues afterwards and restores the async context captured by
 * napi_async_init; it needs an object receiver, so the global stands in for `this`. An
 * exception becomes an 'uncaughtException' (napi_fatal_exception), as for any callback
 * the loop runs. Nothing happens once the environment no longer runs JS (teardown).
 */
static void call_js(napi_env env, napi_ref callback, napi_async_context context, size_t argc, int result)
{
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok)
    return;
  napi_value fn = NULL, global, arg, ret;
  if (napi_get_reference_value(env, callback, &fn) == napi_ok && fn != NULL &&
      napi_get_global(env, &global) == napi_ok && napi_create_int32(env, result, &arg) == napi_ok) {
    if (napi_make_callback(env, context, global, fn, argc, &arg, &ret) == napi_pending_exception) {
      napi_value exception;
      if (napi_get_and_clear_last_exception(env, &exception) == napi_ok)
        napi_fatal_exception(env, exception);
    }
  }
  napi_close_handle_scope(env, scope);
}

/* ---------------------------------------------------------------------------------------
 * Files
 * ------------------------------------------------------------------------------------- */

/*
 * createFile(path, size, mode): open(O_CREAT|O_EXCL|O_RDWR|O_CLOEXEC), fchmod, ftruncate,
 * posix_fallocate. fchmod because open's mode is filtered by the umask. posix_fallocate
 * reserves every page now, so a full tmpfs fails here with ENOSPC instead of killing a
 * process with SIGBUS on first touch. A file that fails half-way is closed and unlinked.
 */
static napi_value js_create_file(napi_env env, napi_callback_info info)
{
  napi_value argv[3];
  char path[PATH_MAX];
  double size, mode;
  if (!get_args(env, info, 3, argv) || !arg_path(env, argv[0], path) ||
      !arg_integer(env, argv[1], "size", 0, MAX_SAFE_INTEGER, &size) ||
      !arg_integer(env, argv[2], "mode", 0, 07777, &mode))
    return NULL;

  int fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, (mode_t)mode);
  if (fd < 0) {
    throw_system(env, errno, "open", path);
    return NULL;
  }
  int err = 0;
  const char *failed = NULL;
  if (fchmod(fd, (mode_t)mode) != 0) {
    err = errno, failed = "fchmod";
  } else {
    while (ftruncate(fd, (off_t)size) != 0 && (err = errno) == EINTR)
      err = 0;
    if (err) {
      failed = "ftruncate";
    } else if (size > 0) {
      while ((err = posix_fallocate(fd, 0, (off_t)size)) == EINTR) /* returns the error, errno untouched */
        ;
      if (err)
        failed = "posix_fallocate";
    }
  }
  if (failed) {
    close(fd);
    unlink(path);
    throw_system(env, err, failed, path);
    return NULL;
  }
  return make_number(env, fd);
}

/* openFile(path, writable): open(O_RDWR or O_RDONLY, O_CLOEXEC). */
static napi_value js_open_file(napi_env env, napi_callback_info info)
{
  napi_value argv[2];
  char path[PATH_MAX];
  bool writable;
  if (!get_args(env, info, 2, argv) || !arg_path(env, argv[0], path) || !arg_bool(env, argv[1], "writable", &writable))
    return NULL;
  int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) {
    throw_system(env, errno, "open", path);
    return NULL;
  }
  return make_number(env, fd);
}

/* fstat(fd): [size, dev, ino, uid, mode]. */
static napi_value js_fstat(napi_env env, napi_callback_info info)
{
  napi_value argv[1];
  int fd;
  struct stat st;
  if (!get_args(env, info, 1, argv) || !arg_fd(env, argv[0], &fd))
    return NULL;
  if (fstat(fd, &st) != 0) {
    throw_system(env, errno, "fstat", NULL);
    return NULL;
  }
  return make_stat(env, &st);
}

/* stat(path): [size, dev, ino, uid, mode], or null for ENOENT (follows symlinks). */
static napi_value js_stat(napi_env env, napi_callback_info info)
{
  napi_value argv[1], null_value;
  char path[PATH_MAX];
  struct stat st;
  if (!get_args(env, info, 1, argv) || !arg_path(env, argv[0], path))
    return NULL;
  if (stat(path, &st) != 0) {
    if (errno == ENOENT) {
      TRY(napi_get_null(env, &null_value));
      return null_value;
    }
    throw_system(env, errno, "stat", path);
    return NULL;
  }
  return make_stat(env, &st);
}

/* closeFd(fd): close(2). EINTR is not retried: on Linux the fd is released regardless. */
static napi_value js_close_fd(napi_env env, napi_callback_info info)
{
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv) || !arg_fd(env, argv[0], &fd))
    return NULL;
  if (close(fd) != 0 && errno != EINTR) {
    throw_system(env, errno, "close", NULL);
    return NULL;
  }
  return make_undefined(env);
}

/* unlink(path): true if removed, false for ENOENT. */
static napi_value js_unlink(napi_env env, napi_callback_info info)
{
  napi_value argv[1];
  char path[PATH_MAX];
  if (!get_args(env, info, 1, argv) || !arg_path(env, argv[0], path))
    return NULL;
  if (unlink(path) != 0) {
    if (errno == ENOENT)
      return make_bool(env, false);
    throw_system(env, errno, "unlink", path);
    return NULL;
  }
  return make_bool(env, true);
}

/* ---------------------------------------------------------------------------------------
 * Mappings
 *
 * One mapping_t per mmap, owned by two JS objects: the external ArrayBuffer and the
 * handle. Whichever of unmap() and the ArrayBuffer's finalizer comes first munmaps; the
 * struct is freed when both owners are gone. Both finalizers and unmap() run on the
 * thread that owns the env, so the fields need no atomics.
 * ------------------------------------------------------------------------------------- */

typedef struct {
  void *base;
  size_t length;
  bool unmapped;
  int owners;
} mapping_t;

static void mapping_release(mapping_t *m)
{
  if (--m->owners == 0)
    free(m);
}

/* The ArrayBuffer's backing store is gone (GC, or detached and collected, or env teardown). */
static void mapping_buffer_finalize(napi_env env, void *data, void *hint)
{
  (void)env, (void)data;
  mapping_t *m = hint;
  if (!m->unmapped) {
    m->unmapped = true;
    munmap(m->base, m->length);
  }
  mapping_release(m);
}

static void mapping_handle_finalize(napi_env env, void *data, void *hint)
{
  (void)env, (void)hint;
  mapping_release(data);
}

/*
 * map(fd, size, writable): mmap(MAP_SHARED) returned as an external ArrayBuffer + handle.
 * Writing through a read-only mapping is a SIGSEGV: the caller must not.
 */
static napi_value js_map(napi_env env, napi_callback_info info)
{
  napi_value argv[3], buffer, handle, result;
  int fd;
  double size;
  bool writable;
  if (!get_args(env, info, 3, argv) || !arg_fd(env, argv[0], &fd) ||
      !arg_integer(env, argv[1], "size", 1, MAX_SAFE_INTEGER, &size) || !arg_bool(env, argv[2], "writable", &writable))
    return NULL;

  void *base = mmap(NULL, (size_t)size, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    throw_system(env, errno, "mmap", NULL);
    return NULL;
  }
  mapping_t *m = malloc(sizeof *m);
  if (m == NULL) {
    munmap(base, (size_t)size);
    throw_system(env, ENOMEM, "malloc", NULL);
    return NULL;
  }
  *m = (mapping_t){.base = base, .length = (size_t)size, .unmapped = false, .owners = 2};
  if (napi_create_external_arraybuffer(env, base, m->length, mapping_buffer_finalize, m, &buffer) != napi_ok) {
    munmap(base, m->length);
    free(m);
    return fail_napi(env);
  }
  if (napi_create_external(env, m, mapping_handle_finalize, NULL, &handle) != napi_ok) {
    mapping_release(m); /* the ArrayBuffer's finalizer still owns it */
    return fail_napi(env);
  }
  TRY(napi_type_tag_object(env, handle, &MAPPING_TAG));
  TRY(napi_create_array_with_length(env, 2, &result));
  TRY(napi_set_element(env, result, 0, buffer));
  TRY(napi_set_element(env, result, 1, handle));
  return result;
}

/*
 * unmap(handle, buffer): napi_detach_arraybuffer, then munmap, once. Detaching first is
 * what makes this safe: every view then reads as length 0 instead of touching unmapped
 * memory. A buffer that is already detached (not by us) may have had its memory moved to
 * another ArrayBuffer, so it is left to the finalizer, which runs when the memory is free.
 */
static napi_value js_unmap(napi_env env, napi_callback_info info)
{
  napi_value argv[2];
  mapping_t *m;
  if (!get_args(env, info, 2, argv) ||
      !arg_handle(env, argv[0], &MAPPING_TAG, "handle", "a MappingHandle from map()", (void **)&m))
    return NULL;
  if (m->unmapped)
    return make_undefined(env);

  bool is_buffer = false, detached = false;
  void *data = NULL;
  size_t length = 0;
  if (napi_is_arraybuffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer) {
    throw_type(env, "buffer", "an instance of ArrayBuffer", argv[1]);
    return NULL;
  }
  TRY(napi_is_detached_arraybuffer(env, argv[1], &detached));
  if (detached)
    return make_undefined(env);
  TRY(napi_get_arraybuffer_info(env, argv[1], &data, &length));
  if (data != m->base || length != m->length) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE",
                          "The \"buffer\" argument is not the ArrayBuffer of this mapping");
    return NULL;
  }
  /* Set before detaching: the finalizer must not munmap a second time, whenever it runs. */
  m->unmapped = true;
  if (napi_detach_arraybuffer(env, argv[1]) != napi_ok) {
    m->unmapped = false;
    return fail_napi(env);
  }
  munmap(m->base, m->length);
  return make_undefined(env);
}

/*
 * protect(handle, offset, length, writable): mprotect a page-aligned range of a live mapping
 * to PROT_READ (or back to read-write). A reader uses it to make the part of a segment it
 * must never write (ring payloads, blob data) read-only, so a stray write kills the reader
 * with SIGSEGV instead of corrupting what the producer and the other readers see. `offset`
 * must be a multiple of the page size; the range is clipped to the mapping.
 */
static napi_value js_protect(napi_env env, napi_callback_info info)
{
  napi_value argv[4];
  mapping_t *m;
  double offset, length;
  bool writable;
  if (!get_args(env, info, 4, argv) ||
      !arg_handle(env, argv[0], &MAPPING_TAG, "handle", "a MappingHandle from map()", (void **)&m) ||
      !arg_integer(env, argv[1], "offset", 0, MAX_SAFE_INTEGER, &offset) ||
      !arg_integer(env, argv[2], "length", 0, MAX_SAFE_INTEGER, &length) ||
      !arg_bool(env, argv[3], "writable", &writable))
    return NULL;
  if (m->unmapped)
    return make_bool(env, false);
  long page = sysconf(_SC_PAGESIZE);
  if (page <= 0 || (size_t)offset % (size_t)page != 0) {
    throw_range(env, "The \"offset\" argument must be a multiple of the page size (%ld). Received %.0f", page,
                offset);
    return NULL;
  }
  if (offset >= (double)m->length || length == 0)
    return make_bool(env, true);
  size_t len = (size_t)length;
  if ((size_t)offset + len > m->length)
    len = m->length - (size_t)offset;
  if (mprotect((char *)m->base + (size_t)offset, len, PROT_READ | (writable ? PROT_WRITE : 0)) != 0) {
    throw_system(env, errno, "mprotect", NULL);
    return NULL;
  }
  return make_bool(env, true);
}

/* ---------------------------------------------------------------------------------------
 * OFD locks: owned by the open file description, so two fds of one process conflict (unlike
 * classic POSIX locks), and released by the kernel when the last fd of it is closed,
 * including when the process dies.
 * ------------------------------------------------------------------------------------- */

static int ofd_lock(int fd, int cmd, short type, off_t offset, struct flock *lock)
{
  *lock = (struct flock){.l_type = type, .l_whence = SEEK_SET, .l_start = offset, .l_len = 1, .l_pid = 0};
  int r;
  while ((r = fcntl(fd, cmd, lock)) != 0 && errno == EINTR)
    ;
  return r;
}

static bool lock_args(napi_env env, napi_callback_info info, int *fd, off_t *offset)
{
  napi_value argv[2];
  double d;
  if (!get_args(env, info, 2, argv) || !arg_fd(env, argv[0], fd) ||
      !arg_integer(env, argv[1], "offset", 0, MAX_SAFE_INTEGER, &d))
    return false;
  *offset = (off_t)d;
  return true;
}

/* lockTry(fd, offset): fcntl(F_OFD_SETLK, F_WRLCK) on one byte; false if someone else holds it. */
static napi_value js_lock_try(napi_env env, napi_callback_info info)
{
  int fd;
  off_t offset;
  struct flock lock;
  if (!lock_args(env, info, &fd, &offset))
    return NULL;
  if (ofd_lock(fd, F_OFD_SETLK, F_WRLCK, offset, &lock) != 0) {
    if (errno == EAGAIN || errno == EACCES)
      return make_bool(env, false);
    throw_system(env, errno, "fcntl", NULL);
    return NULL;
  }
  return make_bool(env, true);
}

/* lockRelease(fd, offset): fcntl(F_OFD_SETLK, F_UNLCK) on one byte. */
static napi_value js_lock_release(napi_env env, napi_callback_info info)
{
  int fd;
  off_t offset;
  struct flock lock;
  if (!lock_args(env, info, &fd, &offset))
    return NULL;
  if (ofd_lock(fd, F_OFD_SETLK, F_UNLCK, offset, &lock) != 0) {
    throw_system(env, errno, "fcntl", NULL);
    return NULL;
  }
  return make_undefined(env);
}

/* lockHeld(fd, offset): fcntl(F_OFD_GETLK) reports a lock of another open file description. */
static napi_value js_lock_held(napi_env env, napi_callback_info info)
{
  int fd;
  off_t offset;
  struct flock lock;
  if (!lock_args(env, info, &fd, &offset))
    return NULL;
  if (ofd_lock(fd, F_OFD_GETLK, F_WRLCK, offset, &lock) != 0) {
    throw_system(env, errno, "fcntl", NULL);
    return NULL;
  }
  return make_bool(env, lock.l_type != F_UNLCK);
}

/* ---------------------------------------------------------------------------------------
 * Futex. Never FUTEX_PRIVATE_FLAG: the words live in MAP_SHARED memory and the peers are
 * other processes; a shared futex is keyed by the page, not by the address space.
 * ------------------------------------------------------------------------------------- */

static long futex(uint32_t *word, int op, uint32_t value, const struct timespec *timeout)
{
  return syscall(SYS_futex, word, op, value, timeout, NULL, 0);
}

/* A relative timeout, or NULL (wait forever) for negative or absurdly large values. */
static struct timespec *relative_timeout(double ms, struct timespec *ts)
{
  if (ms < 0 || ms > 1e15)
    return NULL;
  ts->tv_sec = (time_t)(ms / 1000);
  ts->tv_nsec = (long)((ms - (double)ts->tv_sec * 1000) * 1e6);
  if (ts->tv_nsec > 999999999)
    ts->tv_nsec = 999999999;
  return ts;
}

/*
 * futexWait(buffer, byteOffset, expected, timeoutMs): FUTEX_WAIT while the word equals
 * `expected`. Blocks the calling thread. The kernel compares and sleeps atomically, so
 * a FUTEX_WAKE after the peer changed the word is never lost.
 */
static napi_value js_futex_wait(napi_env env, napi_callback_info info)
{
  napi_value argv[4];
  double offset, timeout_ms;
  uint32_t *word, expected;
  bool detachable;
  struct timespec ts;
  if (!get_args(env, info, 4, argv) || !arg_word(env, argv[0], argv[1], &offset, &word, &detachable) ||
      !arg_futex_value(env, argv[2], &expected) || !arg_timeout(env, argv[3], &timeout_ms))
    return NULL;
  if (futex(word, FUTEX_WAIT, expected, relative_timeout(timeout_ms, &ts)) == 0)
    return make_number(env, WAIT_WOKEN);
  switch (errno) {
  case EAGAIN:
    return make_number(env, WAIT_NOT_EQUAL);
  case ETIMEDOUT:
    return make_number(env, WAIT_TIMED_OUT);
  case EINTR: /* the caller re-checks the word anyway */
    return make_number(env, WAIT_WOKEN);
  default:
    throw_system(env, errno, "futex", NULL);
    return NULL;
  }
}

/* futexWake(buffer, byteOffset, count): FUTEX_WAKE; returns how many were woken. */
static napi_value js_futex_wake(napi_env env, napi_callback_info info)
{
  napi_value argv[3];
  double offset, count;
  uint32_t *word;
  bool detachable;
  if (!get_args(env, info, 3, argv) || !arg_word(env, argv[0], argv[1], &offset, &word, &detachable) ||
      !arg_number(env, argv[2], "count", &count))
    return NULL;
  if (!(count >= 0) || (count != floor(count) && !isinf(count))) {
    throw_range(env, "The value of \"count\" is out of range. It must be an integer >= 0. Received %g", count);
    return NULL;
  }
  long woken = futex(word, FUTEX_WAKE, count > INT_MAX ? INT_MAX : (uint32_t)count, NULL);
  if (woken < 0) {
    throw_system(env, errno, "futex", NULL);
    return NULL;
  }
  return make_number(env, (double)woken);
}

/* ---------------------------------------------------------------------------------------
 * Waiters: one thread per waiter parks on the futex word when armed and reports the result
 * into the creating thread's event loop through a uv_async_t.
 *
 *   JS thread                         waiter thread
 *   waiterArm:  armed, request ──cond──▶ take request, in_wait
 *                                        FUTEX_WAIT(word, expected, timeout)
 *   async_cb:  ◀──uv_async_send──────── result, has_result
 *   callback(result), armed = false
 *
 * Cancel and close must pull the thread out of the kernel. A FUTEX_WAKE sent after the
 * thread released the mutex but before it reached the kernel would be lost, so on
 * Linux >= 5.16 the thread waits with futex_waitv on two words: the shared word and a
 * private `kick` word that cancel/close bump. A bump either wakes the thread or makes its
 * wait fail at entry (EAGAIN); it cannot be lost, and other waiters of the shared word are
 * not disturbed. Where futex_waitv is missing (ENOSYS, or EPERM from a seccomp filter), or
 * SHMBUS_FUTEX_WAITV=0 is set (tests), cancel/close FUTEX_WAKE the shared word until the
 * thread has come back, blocking the caller for about one thread wake-up; the other
 * waiters of that word then wake spuriously and re-check. If the word was unmapped under
 * the wait, no wake reaches it: after KICK_ATTEMPTS the caller gives up, and the thread,
 * detached, ends (and frees its share of the waiter) when its wait times out.
 * ------------------------------------------------------------------------------------- */

/* Written once under pthread_once before any waiter exists. */
static bool have_futex_waitv;
static pthread_once_t futex_waitv_once = PTHREAD_ONCE_INIT;

static void probe_futex_waitv(void)
{
  const char *setting = getenv("SHMBUS_FUTEX_WAITV");
  if (setting != NULL && strcmp(setting, "0") == 0)
    return;
  /* nr_futexes = 0 is invalid: EINVAL proves the syscall exists. */
  have_futex_waitv = syscall(SYS_futex_waitv, NULL, 0, 0, NULL, 0) == -1 && errno == EINVAL;
}

/* struct futex_waitv and __kernel_timespec of <linux/futex.h>, spelled out for old headers. */
struct waitv_entry {
  uint64_t value;
  uint64_t address;
  uint32_t flags;
  uint32_t reserved;
};

struct kernel_timespec {
  int64_t tv_sec;
  int64_t tv_nsec;
};

#define WAITV_U32 0x02       /* FUTEX2_SIZE_U32 */
#define WAITV_PRIVATE 0x80   /* FUTEX2_PRIVATE */

/* FUTEX_WAIT fallback: wakes sent 1 ms apart before cancel/close stop waiting for the thread. */
#define KICK_ATTEMPTS 100

typedef struct {
  napi_env env;
  uv_async_t async;
  pthread_t thread;
  pthread_mutex_t mutex;
  pthread_cond_t armed_cond;  /* JS thread -> waiter thread: request or stopping */
  pthread_cond_t back_cond;   /* waiter thread -> JS thread: left the futex syscall */
  uint32_t kick;              /* private futex word, see above; written under mutex */
  int owners;                 /* handle, open uv_async_t, thread; atomic: the thread may be last */

  /* Guarded by mutex. */
  uint32_t *word;
  uint32_t expected;
  double timeout_ms;
  bool armed;      /* from waiterArm until the callback is called */
  bool request;    /* armed, not yet taken by the thread */
  bool cancelled;  /* waiterCancel since waiterArm: the result is WAIT_CANCELLED */
  bool stopping;   /* waiterClose: the thread exits */
  bool in_wait;    /* the thread is in (or about to enter) the futex syscall */
  bool has_result;
  int result;

  /* JS thread only. */
  size_t offset;
  bool detachable;
  bool thread_started;
  bool closing;
  bool calling;    /* inside the callback, which may close the waiter: see waiter_close */
  napi_ref self;   /* the handle: strong while armed, so the callback comes even if JS dropped it */
  napi_ref callback;
  napi_ref buffer; /* keeps the mapping alive while the thread may wait on it */
  napi_async_context async_context;
  napi_async_cleanup_hook_handle cleanup;
} waiter_t;

static void waiter_release(waiter_t *w)
{
  if (__atomic_sub_fetch(&w->owners, 1, __ATOMIC_ACQ_REL) > 0)
    return;
  pthread_mutex_destroy(&w->mutex);
  pthread_cond_destroy(&w->armed_cond);
  pthread_cond_destroy(&w->back_cond);
  free(w);
}

/* One wait of the waiter thread: futex_waitv on (word, kick), or plain FUTEX_WAIT. */
static int waiter_park(uint32_t *word, uint32_t expected, uint32_t *kick, uint32_t kick_value, double timeout_ms)
{
  long r;
  if (have_futex_waitv) {
    struct waitv_entry entries[2] = {
        {.value = expected, .address = (uintptr_t)word, .flags = WAITV_U32},
        {.value = kick_value, .address = (uintptr_t)kick, .flags = WAITV_U32 | WAITV_PRIVATE},
    };
    struct kernel_timespec deadline, *until = NULL;
    struct timespec now, relative;
    if (relative_timeout(timeout_ms, &relative) != NULL) { /* futex_waitv takes an absolute time */
      clock_gettime(CLOCK_MONOTONIC, &now);
      deadline.tv_sec = (int64_t)now.tv_sec + relative.tv_sec;
      deadline.tv_nsec = (int64_t)now.tv_nsec + relative.tv_nsec;
      if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
      }
      until = &deadline;
    }
    r = syscall(SYS_futex_waitv, entries, 2, 0, until, CLOCK_MONOTONIC);
  } else {
    struct timespec ts;
    r = futex(word, FUTEX_WAIT, expected, relative_timeout(timeout_ms, &ts));
  }
  if (r >= 0)
    return WAIT_WOKEN;
  switch (errno) {
  case EAGAIN:
    return WAIT_NOT_EQUAL;
  case ETIMEDOUT:
    return WAIT_TIMED_OUT;
  case EINTR:
    return WAIT_WOKEN;
  default: /* EFAULT: the word's memory is gone */
    return WAIT_ERROR;
  }
}

static void *waiter_main(void *arg)
{
  waiter_t *w = arg;
  pthread_mutex_lock(&w->mutex);
  for (;;) {
    while (!w->request && !w->stopping)
      pthread_cond_wait(&w->armed_cond, &w->mutex);
    if (w->stopping)
      break;
    w->request = false;
    int result = WAIT_CANCELLED;
    if (!w->cancelled) {
      uint32_t *word = w->word, expected = w->expected, kick_value = w->kick;
      double timeout_ms = w->timeout_ms;
      w->in_wait = true;
      pthread_mutex_unlock(&w->mutex);
      result = waiter_park(word, expected, &w->kick, kick_value, timeout_ms);
      pthread_mutex_lock(&w->mutex);
      w->in_wait = false;
      pthread_cond_broadcast(&w->back_cond);
      if (w->stopping)
        break;
    }
    w->result = result;
    w->has_result = true;
    uv_async_send(&w->async); /* never after stopping: waiter_close sets it before uv_close */
  }
  pthread_mutex_unlock(&w->mutex);
  waiter_release(w);
  return NULL;
}

/*
 * Pulls the thread out of its futex wait so that it re-reads the flags; mutex held. False
 * if it did not come back (fallback only: the wakes do not reach it, see above).
 */
static bool waiter_kick(waiter_t *w)
{
  if (have_futex_waitv) {
    __atomic_store_n(&w->kick, w->kick + 1, __ATOMIC_SEQ_CST);
    futex(&w->kick, FUTEX_WAKE_PRIVATE, 1, NULL);
    return true;
  }
  for (int attempt = 0; w->in_wait; attempt++) {
    if (attempt == KICK_ATTEMPTS)
      return false;
    futex(w->word, FUTEX_WAKE, INT_MAX, NULL);
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += 1000000; /* re-send after 1 ms if the wake fell into the gap */
    if (until.tv_nsec >= 1000000000) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&w->back_cond, &w->mutex, &until);
  }
  return true;
}

static void waiter_closed(uv_handle_t *handle)
{
  waiter_t *w = CONTAINER_OF(handle, waiter_t, async);
  /* Ends our part of env teardown if the cleanup hook started it; unregisters it otherwise. */
  if (w->cleanup != NULL)
    napi_remove_async_cleanup_hook(w->cleanup);
  waiter_release(w);
}

/*
 * Stops and joins the thread (or detaches it, see KICK_ATTEMPTS), drops the JS references
 * and closes the uv_async_t. Idempotent.
 */
static void waiter_close(waiter_t *w)
{
  if (w->closing)
    return;
  w->closing = true;
  if (w->thread_started) {
    pthread_mutex_lock(&w->mutex);
    w->stopping = true;
    pthread_cond_signal(&w->armed_cond);
    bool back = waiter_kick(w);
    pthread_mutex_unlock(&w->mutex);
    if (back)
      pthread_join(w->thread, NULL);
    else
      pthread_detach(w->thread);
  }
  if (w->self != NULL)
    napi_delete_reference(w->env, w->self);
  if (w->callback != NULL)
    napi_delete_reference(w->env, w->callback);
  if (w->buffer != NULL)
    napi_delete_reference(w->env, w->buffer);
  /* napi_make_callback still needs the async context after the callback returns. */
  if (w->async_context != NULL && !w->calling) {
    napi_async_destroy(w->env, w->async_context);
    w->async_context = NULL;
  }
  w->self = w->callback = w->buffer = NULL;
  uv_close((uv_handle_t *)&w->async, waiter_closed);
}

static void waiter_async_cb(uv_async_t *handle)
{
  waiter_t *w = CONTAINER_OF(handle, waiter_t, async);
  pthread_mutex_lock(&w->mutex);
  bool ready = w->has_result;
  int result = w->cancelled ? WAIT_CANCELLED : w->result;
  if (ready)
    w->has_result = w->armed = w->cancelled = false;
  pthread_mutex_unlock(&w->mutex);
  if (!ready || w->closing)
    return;
  /* Disarmed: stop holding the loop and the handle before the callback possibly re-arms. */
  uv_unref((uv_handle_t *)&w->async);
  napi_reference_unref(w->env, w->self, NULL);
  w->calling = true;
  call_js(w->env, w->callback, w->async_context, 1, result);
  w->calling = false;
  /* Still allocated even if the callback closed it: uv_close calls back on a later tick. */
  if (w->closing && w->async_context != NULL) {
    napi_async_destroy(w->env, w->async_context);
    w->async_context = NULL;
  }
}

/* The environment (a worker, or the main thread at exit) is going away. */
static void waiter_cleanup_hook(napi_async_cleanup_hook_handle handle, void *arg)
{
  (void)handle;
  waiter_close(arg);
}

/* The handle was collected while disarmed: nobody can arm or close this waiter any more. */
static void waiter_handle_finalize(napi_env env, void *data, void *hint)
{
  (void)env, (void)hint;
  waiter_t *w = data;
  waiter_close(w);
  waiter_release(w);
}

/*
 * waiterCreate(buffer, byteOffset, callback): starts the thread (all signals blocked in it,
 * so it never takes the process's signals) and an unref'd uv_async_t on this env's loop.
 */
static napi_value js_waiter_create(napi_env env, napi_callback_info info)
{
  napi_value argv[3], name, handle;
  double offset;
  uint32_t *word;
  bool detachable;
  uv_loop_t *loop;
  if (!get_args(env, info, 3, argv) || !arg_word(env, argv[0], argv[1], &offset, &word, &detachable) ||
      !arg_function(env, argv[2], "callback"))
    return NULL;
  TRY(napi_get_uv_event_loop(env, &loop));
  pthread_once(&futex_waitv_once, probe_futex_waitv);

  waiter_t *w = calloc(1, sizeof *w);
  if (w == NULL) {
    throw_system(env, ENOMEM, "malloc", NULL);
    return NULL;
  }
  pthread_condattr_t cond_attr;
  pthread_condattr_init(&cond_attr);
  pthread_condattr_setclock(&cond_attr, CLOCK_MONOTONIC);
  pthread_mutex_init(&w->mutex, NULL);
  pthread_cond_init(&w->armed_cond, NULL);
  pthread_cond_init(&w->back_cond, &cond_attr);
  pthread_condattr_destroy(&cond_attr);
  w->env = env;
  w->word = word;
  w->offset = (size_t)offset;
  w->detachable = detachable;
  w->owners = 1; /* the uv_async_t, released by waiter_closed */
  int err = uv_async_init(loop, &w->async, waiter_async_cb);
  if (err != 0) {
    waiter_release(w); /* no handle to close: frees it */
    throw_system(env, -err, "uv_async_init", NULL);
    return NULL;
  }
  uv_unref((uv_handle_t *)&w->async);

  /* From here on, waiter_close undoes whatever has been set up. */
  if (napi_create_reference(env, argv[2], 1, &w->callback) != napi_ok ||
      napi_create_reference(env, argv[0], 1, &w->buffer) != napi_ok ||
      napi_create_string_utf8(env, "shmbus.Waiter", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &w->async_context) != napi_ok ||
      napi_add_async_cleanup_hook(env, waiter_cleanup_hook, w, &w->cleanup) != napi_ok) {
    fail_napi(env);
    waiter_close(w);
    return NULL;
  }

  pthread_attr_t attr;
  sigset_t all, previous;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, WAITER_STACK_SIZE);
  sigfillset(&all);
  __atomic_add_fetch(&w->owners, 1, __ATOMIC_RELAXED); /* the thread's, released as it exits */
  pthread_sigmask(SIG_SETMASK, &all, &previous);       /* the new thread inherits this mask */
  err = pthread_create(&w->thread, &attr, waiter_main, w);
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  pthread_attr_destroy(&attr);
  if (err != 0) {
    __atomic_sub_fetch(&w->owners, 1, __ATOMIC_RELAXED);
    waiter_close(w);
    throw_system(env, err, "pthread_create", NULL);
    return NULL;
  }
  w->thread_started = true;

  if (napi_create_external(env, w, waiter_handle_finalize, NULL, &handle) != napi_ok) {
    fail_napi(env);
    waiter_close(w);
    return NULL;
  }
  __atomic_add_fetch(&w->owners, 1, __ATOMIC_RELAXED); /* the handle */
  TRY(napi_type_tag_object(env, handle, &WAITER_TAG));
  TRY(napi_create_reference(env, handle, 0, &w->self));
  return handle;
}

static bool arg_waiter(napi_env env, napi_value value, waiter_t **w)
{
  return arg_handle(env, value, &WAITER_TAG, "waiter", "a WaiterHandle from waiterCreate()", (void **)w);
}

/*
 * waiterArm(waiter, expected, timeoutMs): hands one wait to the thread and refs the async
 * handle and the waiter's handle, so the loop stays alive until the callback and the
 * waiter is not collected before it. EBUSY while a wait is pending.
 * A mapping's ArrayBuffer is looked up again: once unmapped (detached) it throws RangeError
 * instead of letting the thread wait on memory that is gone.
 */
static napi_value js_waiter_arm(napi_env env, napi_callback_info info)
{
  napi_value argv[3], buffer;
  waiter_t *w;
  uint32_t expected;
  double timeout_ms;
  if (!get_args(env, info, 3, argv) || !arg_waiter(env, argv[0], &w) || !arg_futex_value(env, argv[1], &expected) ||
      !arg_timeout(env, argv[2], &timeout_ms))
    return NULL;
  if (w->closing) {
    napi_throw_error(env, "ERR_INVALID_STATE", "The waiter is closed");
    return NULL;
  }
  uint32_t *word = w->word;
  if (w->detachable) {
    void *data;
    size_t length;
    TRY(napi_get_reference_value(env, w->buffer, &buffer));
    TRY(napi_get_arraybuffer_info(env, buffer, &data, &length));
    if (!word_at(env, data, length, (double)w->offset, &word))
      return NULL;
  }

  pthread_mutex_lock(&w->mutex);
  bool busy = w->armed;
  if (!busy) {
    w->word = word;
    w->expected = expected;
    w->timeout_ms = timeout_ms;
    w->armed = w->request = true;
    w->cancelled = false;
    pthread_cond_signal(&w->armed_cond);
  }
  pthread_mutex_unlock(&w->mutex);
  if (busy) {
    throw_system(env, EBUSY, "waiterArm", NULL);
    return NULL;
  }
  uv_ref((uv_handle_t *)&w->async);
  napi_reference_ref(env, w->self, NULL);
  return make_undefined(env);
}

/* waiterCancel(waiter): the pending wait ends and its callback gets WAIT_CANCELLED. */
static napi_value js_waiter_cancel(napi_env env, napi_callback_info info)
{
  napi_value argv[1];
  waiter_t *w;
  if (!get_args(env, info, 1, argv) || !arg_waiter(env, argv[0], &w))
    return NULL;
  if (!w->closing) {
    pthread_mutex_lock(&w->mutex);
    if (w->armed && !w->cancelled) {
      w->cancelled = true;
      waiter_kick(w);
    }
    pthread_mutex_unlock(&w->mutex);
  }
  return make_undefined(env);
}

/* waiterClose(waiter): stop and join the thread; a pending wait gets no callback. */
static napi_value js_waiter_close(napi_env env, napi_callback_info info)
{
  napi_value argv[1];
  waiter_t *w;
  if (!get_args(env, info, 1, argv) || !arg_waiter(env, argv[0], &w))
    return NULL;
  waiter_close(w);
  return make_undefined(env);
}

/* ---------------------------------------------------------------------------------------
 * eventfd + uv_poll
 * ------------------------------------------------------------------------------------- */

/* eventfdCreate(initial, semaphore): eventfd(EFD_CLOEXEC|EFD_NONBLOCK[|EFD_SEMAPHORE]). */
static napi_value js_eventfd_create(napi_env env, napi_callback_info info)
{
  napi_value argv[2];
  double initial;
  bool semaphore;
  if (!get_args(env, info, 2, argv) || !arg_integer(env, argv[0], "initial", 0, UINT32_MAX, &initial) ||
      !arg_bool(env, argv[1], "semaphore", &semaphore))
    return NULL;
  int fd = eventfd((unsigned)initial, EFD_CLOEXEC | EFD_NONBLOCK | (semaphore ? EFD_SEMAPHORE : 0));
  if (fd < 0) {
    throw_system(env, errno, "eventfd", NULL);
    return NULL;
  }
  return make_number(env, fd);
}

/* eventfdRead(fd): read(2) the counter (resetting it, or taking 1 in semaphore mode); 0 if EAGAIN. */
static napi_value js_eventfd_read(napi_env env, napi_callback_info info)
{
  napi_value argv[1];
  int fd;
  uint64_t value;
  ssize_t n;
  if (!get_args(env, info, 1, argv) || !arg_fd(env, argv[0], &fd))
    return NULL;
  while ((n = read(fd, &value, sizeof value)) < 0 && errno == EINTR)
    ;
  if (n < 0 && errno == EAGAIN)
    return make_number(env, 0);
  if (n != (ssize_t)sizeof value) {
    throw_system(env, n < 0 ? errno : EIO, "read", NULL);
    return NULL;
  }
  return make_number(env, (double)value);
}

/* eventfdWrite(fd, value): write(2) adds `value` to the counter (EAGAIN if it would overflow). */
static napi_value js_eventfd_write(napi_env env, napi_callback_info info)
{
  napi_value argv[2];
  int fd;
  double d;
  ssize_t n;
  if (!get_args(env, info, 2, argv) || !arg_fd(env, argv[0], &fd) ||
      !arg_integer(env, argv[1], "value", 0, MAX_SAFE_INTEGER, &d))
    return NULL;
  uint64_t value = (uint64_t)d;
  while ((n = write(fd, &value, sizeof value)) < 0 && errno == EINTR)
    ;
  if (n != (ssize_t)sizeof value) {
    throw_system(env, n < 0 ? errno : EIO, "write", NULL);
    return NULL;
  }
  return make_undefined(env);
}

/* A uv_poll_t owned, like a waiter, by its handle external and by the open uv handle. */
typedef struct {
  napi_env env;
  uv_poll_t poll;
  bool closing;
  bool calling; /* inside the callback, which may stop the poll: see poll_close */
  int owners;
  napi_ref self; /* the handle, strong until pollStop: a running watcher is never collected */
  napi_ref callback;
  napi_async_context async_context;
  napi_async_cleanup_hook_handle cleanup;
} poll_t;

static void poll_release(poll_t *p)
{
  if (--p->owners == 0)
    free(p);
}

static void poll_closed(uv_handle_t *handle)
{
  poll_t *p = CONTAINER_OF(handle, poll_t, poll);
  if (p->cleanup != NULL)
    napi_remove_async_cleanup_hook(p->cleanup);
  poll_release(p);
}

static void poll_close(poll_t *p)
{
  if (p->closing)
    return;
  p->closing = true;
  uv_poll_stop(&p->poll);
  if (p->self != NULL)
    napi_delete_reference(p->env, p->self);
  if (p->callback != NULL)
    napi_delete_reference(p->env, p->callback);
  /* napi_make_callback still needs the async context after the callback returns. */
  if (p->async_context != NULL && !p->calling) {
    napi_async_destroy(p->env, p->async_context);
    p->async_context = NULL;
  }
  p->self = p->callback = NULL;
  uv_close((uv_handle_t *)&p->poll, poll_closed);
}

/* Readable (or an error, after which libuv has stopped the watcher): JS reads the fd. */
static void poll_cb(uv_poll_t *handle, int status, int events)
{
  (void)status, (void)events;
  poll_t *p = CONTAINER_OF(handle, poll_t, poll);
  if (p->closing)
    return;
  p->calling = true;
  call_js(p->env, p->callback, p->async_context, 0, 0);
  p->calling = false;
  if (p->closing && p->async_context != NULL) {
    napi_async_destroy(p->env, p->async_context);
    p->async_context = NULL;
  }
}

static void poll_cleanup_hook(napi_async_cleanup_hook_handle handle, void *arg)
{
  (void)handle;
  poll_close(arg);
}

static void poll_handle_finalize(napi_env env, void *data, void *hint)
{
  (void)env, (void)hint;
  poll_t *p = data;
  poll_close(p);
  poll_release(p);
}

/*
 * pollStart(fd, callback): uv_poll_start(UV_READABLE) on this env's loop; the watcher is
 * ref'd, so it keeps the loop (and its handle) alive until pollStop. Level-triggered: the callback repeats
 * while the fd stays readable. One watcher per fd per loop (libuv refuses a second:
 * EEXIST); stop it before closing the fd.
 */
static napi_value js_poll_start(napi_env env, napi_callback_info info)
{
  napi_value argv[2], name, handle;
  int fd;
  uv_loop_t *loop;
  if (!get_args(env, info, 2, argv) || !arg_fd(env, argv[0], &fd) || !arg_function(env, argv[1], "callback"))
    return NULL;
  TRY(napi_get_uv_event_loop(env, &loop));
  poll_t *p = calloc(1, sizeof *p);
  if (p == NULL) {
    throw_system(env, ENOMEM, "malloc", NULL);
    return NULL;
  }
  p->env = env;
  int err = uv_poll_init(loop, &p->poll, fd);
  if (err != 0) {
    free(p);
    throw_system(env, -err, "uv_poll_init", NULL);
    return NULL;
  }
  p->owners = 1; /* the uv_poll_t, released by poll_closed */
  if (napi_create_reference(env, argv[1], 1, &p->callback) != napi_ok ||
      napi_create_string_utf8(env, "shmbus.Poll", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &p->async_context) != napi_ok ||
      napi_add_async_cleanup_hook(env, poll_cleanup_hook, p, &p->cleanup) != napi_ok) {
    fail_napi(env);
    poll_close(p);
    return NULL;
  }
  err = uv_poll_start(&p->poll, UV_READABLE, poll_cb);
  if (err != 0) {
    poll_close(p);
    throw_system(env, -err, "uv_poll_start", NULL);
    return NULL;
  }
  if (napi_create_external(env, p, poll_handle_finalize, NULL, &handle) != napi_ok) {
    fail_napi(env);
    poll_close(p);
    return NULL;
  }
  p->owners++; /* the handle */
  TRY(napi_type_tag_object(env, handle, &POLL_TAG));
  TRY(napi_create_reference(env, handle, 1, &p->self));
  return handle;
}

/* pollStop(poll): uv_poll_stop + uv_close. Idempotent. */
static napi_value js_poll_stop(napi_env env, napi_callback_info info)
{
  napi_value argv[1];
  poll_t *p;
  if (!get_args(env, info, 1, argv) ||
      !arg_handle(env, argv[0], &POLL_TAG, "poll", "a PollHandle from pollStart()", (void **)&p))
    return NULL;
  poll_close(p);
  return make_undefined(env);
}

/* pollRef(poll, ref): uv_ref/uv_unref the watcher. A watcher that stays started across
 * many waits (no epoll_ctl per wait) is unref'd while nobody waits, so it does not keep the
 * process alive on its own. No system call. */
static napi_value js_poll_ref(napi_env env, napi_callback_info info)
{
  napi_value argv[2];
  poll_t *p;
  bool ref;
  if (!get_args(env, info, 2, argv) ||
      !arg_handle(env, argv[0], &POLL_TAG, "poll", "a PollHandle from pollStart()", (void **)&p))
    return NULL;
  if (napi_get_value_bool(env, argv[1], &ref) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "ref must be a boolean");
    return NULL;
  }
  if (!p->closing) {
    if (ref)
      uv_ref((uv_handle_t *)&p->poll);
    else
      uv_unref((uv_handle_t *)&p->poll);
  }
  return make_undefined(env);
}

/* ---------------------------------------------------------------------------------------
 * Unix-domain sockets: the control plane of a fan-out sender hands each consumer its ring
 * segment fd and an eventfd (SCM_RIGHTS) and checks who is on the other end (SO_PEERCRED).
 * Only the syscalls live here: framing, short writes and readiness (uv_poll, or the
 * net.Socket that owns the fd) are the caller's. Nothing blocks except unixConnect.
 *
 *   sender: sendmsg(data, SCM_RIGHTS[ring, eventfd]) ──▶ receiver: recvmsg(MSG_CMSG_CLOEXEC)
 *   the kernel attaches the fds to the first byte sent; the receiver gets them with the
 *   read that returns that byte (a read never spans two messages that carry fds).
 * ------------------------------------------------------------------------------------- */

/* Most fds one sendFds carries: a ring, its eventfds, room to grow. */
#define SEND_FDS_MAX 16
/*
 * Most fds the kernel attaches to one message (SCM_MAX_FD in include/net/scm.h). recvFds
 * makes room for all of them, so a peer sending more than maxFds cannot make the kernel
 * drop fds with MSG_CTRUNC: they arrive, and the ones beyond maxFds are closed here.
 */
#define RECV_FDS_MAX 253
#ifndef SCM_PIDFD
#define SCM_PIDFD 0x04 /* Linux 6.5: carries a pidfd, only under SO_PASSPIDFD (never set here) */
#endif

/* A Uint8Array (or Buffer) argument: the address of its first byte and its length. */
static bool arg_bytes(napi_env env, napi_value value, const char *name, uint8_t **data, size_t *length)
{
  bool is_typed = false;
  napi_typedarray_type type;
  napi_value backing;
  size_t offset;
  void *first = NULL;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, value, &type, length, &first, &backing, &offset) != napi_ok ||
      type != napi_uint8_array) {
    throw_type(env, name, "an instance of Uint8Array", value);
    return false;
  }
  *data = first; /* already advanced by byteOffset; NULL (length 0) once detached */
  return true;
}

/* sendFds' fds: an Array of at most SEND_FDS_MAX fds. */
static bool arg_fd_list(napi_env env, napi_value value, int fds[SEND_FDS_MAX], uint32_t *count)
{
  bool is_array = false;
  if (napi_is_array(env, value, &is_array) != napi_ok || !is_array) {
    throw_type(env, "fds", "an instance of Array", value);
    return false;
  }
  if (napi_get_array_length(env, value, count) != napi_ok) {
    fail_napi(env);
    return false;
  }
  if (*count > SEND_FDS_MAX) {
    throw_range(env, "The value of \"fds.length\" is out of range. It must be <= %d. Received %u", SEND_FDS_MAX,
                *count);
    return false;
  }
  for (uint32_t i = 0; i < *count; i++) {
    napi_value element;
    char name[16];
    double d;
    snprintf(name, sizeof name, "fds[%u]", i);
    if (napi_get_element(env, value, i, &element) != napi_ok) {
      fail_napi(env);
      return false;
    }
    if (!arg_integer(env, element, name, 0, INT_MAX, &d))
      return false;
    fds[i] = (int)d;
  }
  return true;
}

/*
 * unixConnect(path): socket(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC), connect, then O_NONBLOCK.
 * Connect blocks on purpose: a unix connect completes at once (the kernel queues it on the
 * listener) unless the listener's backlog is full, where a non-blocking one fails with EAGAIN
 * instead of waiting for an accept. EINTR is retried: an interrupted unix connect leaves the
 * socket unconnected, with nothing half-open. Filesystem paths only, of at most 107 bytes
 * (sun_path holds 108 with the NUL); an abstract name would need a NUL byte, which
 * arg_path refuses.
 */
static napi_value js_unix_connect(napi_env env, napi_callback_info info)
{
  napi_value argv[1];
  char path[PATH_MAX];
  struct sockaddr_un address = {.sun_family = AF_UNIX};
  if (!get_args(env, info, 1, argv) || !arg_path_for(env, argv[0], "connect", path))
    return NULL;
  size_t length = strlen(path);
  if (length == 0 || length >= sizeof address.sun_path) {
    /* "" would name the abstract socket "\0" (a leading NUL), not a file: ENOENT as open("") */
    throw_system(env, length == 0 ? ENOENT : ENAMETOOLONG, "connect", path);
    return NULL;
  }
  memcpy(address.sun_path, path, length + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_system(env, errno, "socket", NULL);
    return NULL;
  }
  socklen_t address_length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + length + 1);
  int r;
  while ((r = connect(fd, (struct sockaddr *)&address, address_length)) != 0 && errno == EINTR)
    ;
  if (r != 0) {
    int err = errno;
    close(fd);
    throw_system(env, err, "connect", path);
    return NULL;
  }
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    int err = errno;
    close(fd);
    throw_system(env, err, "fcntl", NULL);
    return NULL;
  }
  return make_number(env, fd);
}

/*
 * sendFds(fd, data, fds): one sendmsg(MSG_NOSIGNAL|MSG_DONTWAIT) of `data` with one
 * SCM_RIGHTS message holding `fds` (none if empty). Returns the bytes sent, maybe fewer than
 * data.length: the fds went with the first of them, so the caller sends the rest without
 * fds. EAGAIN (nothing sent, no fds either) and EPIPE (peer gone; MSG_NOSIGNAL: no SIGPIPE)
 * are thrown like any other error: the caller decides.
 */
static napi_value js_send_fds(napi_env env, napi_callback_info info)
{
  napi_value argv[3];
  int fd, fds[SEND_FDS_MAX];
  uint32_t count;
  uint8_t *data;
  size_t length;
  if (!get_args(env, info, 3, argv) || !arg_fd(env, argv[0], &fd) ||
      !arg_bytes(env, argv[1], "data", &data, &length) || !arg_fd_list(env, argv[2], fds, &count))
    return NULL;
  if (count > 0 && length == 0) {
    /* On a stream socket the fds ride on a byte: with none, nobody could receive them. */
    throw_range(env, "The value of \"data.byteLength\" is out of range. It must be >= 1 when fds are passed. "
                     "Received 0");
    return NULL;
  }
  union {
    struct cmsghdr header; /* aligns the buffer for cmsghdr */
    char space[CMSG_SPACE(sizeof(int) * SEND_FDS_MAX)];
  } control;
  struct iovec iov = {.iov_base = data, .iov_len = length};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (count > 0) {
    memset(&control, 0, sizeof control);
    msg.msg_control = control.space;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * count);
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * count);
    memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * count);
  }
  ssize_t n;
  while ((n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT)) < 0 && errno == EINTR)
    ;
  if (n < 0) {
    throw_system(env, errno, "sendmsg", NULL);
    return NULL;
  }
  return make_number(env, (double)n);
}

static void close_all(const int *fds, uint32_t count)
{
  for (uint32_t i = 0; i < count; i++)
    close(fds[i]);
}

/*
 * recvFds(fd, buffer, maxFds): one recvmsg(MSG_DONTWAIT|MSG_CMSG_CLOEXEC) into buffer;
 * returns [n, fds]: n bytes (0 at EOF, -1 when nothing is there now) and the first maxFds
 * fds of its SCM_RIGHTS messages, in the order sent. Every other fd the kernel installed is
 * closed before returning: those beyond maxFds, any pidfd (SCM_PIDFD), and all of them when
 * the kernel truncated the control data (MSG_CTRUNC: it could not install every fd, e.g.
 * EMFILE), which throws EMSGSIZE: the bytes of that read are consumed with the fds lost, so
 * the stream is out of step and the caller should close it.
 */
static napi_value js_recv_fds(napi_env env, napi_callback_info info)
{
  napi_value argv[3];
  int fd;
  uint8_t *data;
  size_t length;
  double max_fds;
  if (!get_args(env, info, 3, argv) || !arg_fd(env, argv[0], &fd) ||
      !arg_bytes(env, argv[1], "buffer", &data, &length) ||
      !arg_integer(env, argv[2], "maxFds", 0, RECV_FDS_MAX, &max_fds))
    return NULL;
  if (length == 0) {
    /* A zero-length read returns 0, which would read as EOF. */
    throw_range(env, "The value of \"buffer.byteLength\" is out of range. It must be >= 1. Received 0");
    return NULL;
  }
  union {
    struct cmsghdr header;
    /* Every fd the kernel may attach, plus the credentials a peer could add under SO_PASSCRED. */
    char space[CMSG_SPACE(sizeof(int) * RECV_FDS_MAX) + CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int))];
  } control;
  struct iovec iov = {.iov_base = data, .iov_len = length};
  struct msghdr msg = {
      .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = sizeof control.space};
  ssize_t n;
  while ((n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
    ;
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    throw_system(env, errno, "recvmsg", NULL);
    return NULL;
  }
  int kept[RECV_FDS_MAX];
  uint32_t count = 0;
  bool truncated = n >= 0 && (msg.msg_flags & MSG_CTRUNC) != 0;
  for (struct cmsghdr *cmsg = n >= 0 ? CMSG_FIRSTHDR(&msg) : NULL; cmsg != NULL; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || (cmsg->cmsg_type != SCM_RIGHTS && cmsg->cmsg_type != SCM_PIDFD))
      continue; /* SCM_CREDENTIALS, SCM_SECURITY: no fds in them */
    size_t received = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char *cursor = CMSG_DATA(cmsg);
    for (size_t i = 0; i < received; i++) {
      int passed;
      memcpy(&passed, cursor + i * sizeof(int), sizeof passed);
      if (cmsg->cmsg_type == SCM_RIGHTS && !truncated && count < (uint32_t)max_fds)
        kept[count++] = passed;
      else
        close(passed);
    }
  }
  if (truncated) {
    throw_system_detail(env, EMSGSIZE, "recvmsg", NULL,
                        "control data truncated (MSG_CTRUNC), every fd received was closed");
    return NULL;
  }
  napi_value result, list, value;
  if (napi_create_array_with_length(env, 2, &result) != napi_ok ||
      napi_create_array_with_length(env, count, &list) != napi_ok ||
      napi_create_double(env, n < 0 ? -1 : (double)n, &value) != napi_ok ||
      napi_set_element(env, result, 0, value) != napi_ok || napi_set_element(env, result, 1, list) != napi_ok)
    goto fail;
  for (uint32_t i = 0; i < count; i++) {
    if (napi_create_int32(env, kept[i], &value) != napi_ok || napi_set_element(env, list, i, value) != napi_ok)
      goto fail;
  }
  return result;
fail:
  close_all(kept, count); /* the caller gets an exception, not the fds: nobody else would close them */
  return fail_napi(env);
}

/*
 * peerCredentials(fd): getsockopt(SO_PEERCRED): [pid, uid, gid] of the process that called
 * connect (or listen, seen from the connecting end) on the other end of this unix socket,
 * as of that moment; the pid may since have exited or been reused.
 */
static napi_value js_peer_credentials(napi_env env, napi_callback_info info)
{
  napi_value argv[1], result, value;
  int fd;
  struct ucred credentials;
  socklen_t length = sizeof credentials;
  if (!get_args(env, info, 1, argv) || !arg_fd(env, argv[0], &fd))
    return NULL;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
    throw_system(env, errno, "getsockopt", NULL);
    return NULL;
  }
  const double fields[] = {(double)credentials.pid, (double)credentials.uid, (double)credentials.gid};
  TRY(napi_create_array_with_length(env, 3, &result));
  for (uint32_t i = 0; i < 3; i++) {
    TRY(napi_create_double(env, fields[i], &value));
    TRY(napi_set_element(env, result, i, value));
  }
  return result;
}

/* ---------------------------------------------------------------------------------------
 * Misc
 * ------------------------------------------------------------------------------------- */

/* noop(): the baseline cost of crossing into C. */

/* ---------------------------------------------------------------------------------------
 * io_uring futex waiter (Linux >= 6.7): FUTEX_WAIT on the shared word is submitted to a
 * small io_uring; the ring fd turns readable when it completes, so the event loop watches
 * the ring fd itself (uv_poll, from JS) and the waker's FUTEX_WAKE reaches this thread with
 * one wake-up, without the helper thread of the waiter above. uringCreate fails (ENOSYS,
 * EPERM under seccomp, EINVAL on older kernels) where this is not available: JS then uses
 * the waiter thread.
 */
#ifndef IORING_OP_FUTEX_WAIT
#define IORING_OP_FUTEX_WAIT 51 /* Linux 6.7; absent from older uapi headers */
#endif
#define FUTEX2_SIZE_U32_FLAG 0x02 /* futex2 flags: a 32-bit word, shared (no FUTEX2_PRIVATE) */
#define URING_ENTRIES 4
#define URING_WAIT_DATA 1
#define URING_CANCEL_DATA 2

typedef struct {
  int fd;
  void *sq_ring;
  size_t sq_ring_length;
  void *cq_ring; /* == sq_ring with IORING_FEAT_SINGLE_MMAP */
  size_t cq_ring_length;
  struct io_uring_sqe *sqes;
  size_t sqes_length;
  unsigned *sq_head, *sq_tail, *sq_array, sq_mask, sq_entries;
  unsigned *cq_head, *cq_tail, cq_mask;
  struct io_uring_cqe *cqes;
  uint32_t *word;
  napi_ref buffer_ref;
  napi_env env;
} uring_t;

static void uring_unmap(uring_t *u)
{
  if (u->sqes != NULL && u->sqes != MAP_FAILED)
    munmap(u->sqes, u->sqes_length);
  if (u->cq_ring != NULL && u->cq_ring != MAP_FAILED && u->cq_ring != u->sq_ring)
    munmap(u->cq_ring, u->cq_ring_length);
  if (u->sq_ring != NULL && u->sq_ring != MAP_FAILED)
    munmap(u->sq_ring, u->sq_ring_length);
  u->sqes = NULL;
  u->cq_ring = u->sq_ring = NULL;
}

/* Closing the ring fd cancels a pending FUTEX_WAIT; idempotent. */
static void uring_close(uring_t *u)
{
  if (u->fd < 0)
    return;
  uring_unmap(u);
  close(u->fd);
  u->fd = -1;
  if (u->buffer_ref != NULL) {
    napi_delete_reference(u->env, u->buffer_ref);
    u->buffer_ref = NULL;
  }
}

/* Queues one SQE and submits it. Returns 0 or -errno. Only this JS thread writes the SQ. */
static int uring_submit(uring_t *u, uint8_t opcode, int32_t fd_field, uint64_t addr, uint64_t off, uint64_t addr3,
                        uint64_t user_data)
{
  unsigned tail = *u->sq_tail;
  unsigned head = __atomic_load_n(u->sq_head, __ATOMIC_ACQUIRE);
  if (tail - head >= u->sq_entries)
    return -EBUSY;
  unsigned index = tail & u->sq_mask;
  struct io_uring_sqe *sqe = &u->sqes[index];
  memset(sqe, 0, sizeof *sqe);
  sqe->opcode = opcode;
  sqe->fd = fd_field;
  sqe->addr = addr;
  sqe->off = off;
  sqe->addr3 = addr3;
  sqe->user_data = user_data;
  u->sq_array[index] = index;
  /* The SQE is written before the tail that hands it to the kernel. */
  __atomic_store_n(u->sq_tail, tail + 1, __ATOMIC_RELEASE);
  long r;
  while ((r = syscall(__NR_io_uring_enter, u->fd, 1, 0, 0, NULL, 0)) < 0 && errno == EINTR)
    ;
  return r < 0 ? -errno : 0;
}

/* Pops every CQE; returns the WAIT_* result of the last FUTEX_WAIT completion, or -1 if none. */
static int uring_reap(uring_t *u)
{
  int result = -1;
  unsigned head = *u->cq_head;
  unsigned tail = __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE);
  for (; head != tail; head++) {
    struct io_uring_cqe *cqe = &u->cqes[head & u->cq_mask];
    if (cqe->user_data != URING_WAIT_DATA)
      continue; /* the completion of a cancel request */
    int res = cqe->res;
    result = res == 0 || res == -EINTR  ? WAIT_WOKEN
             : res == -EAGAIN           ? WAIT_NOT_EQUAL
             : res == -ECANCELED        ? WAIT_CANCELLED
                                        : WAIT_ERROR;
  }
  __atomic_store_n(u->cq_head, head, __ATOMIC_RELEASE);
  return result;
}

static int uring_open(uring_t *u)
{
  struct io_uring_params params;
  memset(&params, 0, sizeof params);
  u->fd = (int)syscall(__NR_io_uring_setup, URING_ENTRIES, &params);
  if (u->fd < 0)
    return -errno;
  fcntl(u->fd, F_SETFD, FD_CLOEXEC);
  u->sq_ring_length = params.sq_off.array + params.sq_entries * sizeof(unsigned);
  u->cq_ring_length = params.cq_off.cqes + params.cq_entries * sizeof(struct io_uring_cqe);
  bool single = (params.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single && u->cq_ring_length > u->sq_ring_length)
    u->sq_ring_length = u->cq_ring_length;
  u->sq_ring = mmap(NULL, u->sq_ring_length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->fd,
                    IORING_OFF_SQ_RING);
  if (u->sq_ring == MAP_FAILED)
    return -errno;
  u->cq_ring = single ? u->sq_ring
                      : mmap(NULL, u->cq_ring_length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->fd,
                             IORING_OFF_CQ_RING);
  if (u->cq_ring == MAP_FAILED)
    return -errno;
  u->sqes_length = params.sq_entries * sizeof(struct io_uring_sqe);
  u->sqes = mmap(NULL, u->sqes_length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->fd, IORING_OFF_SQES);
  if (u->sqes == MAP_FAILED)
    return -errno;
  char *sq = u->sq_ring, *cq = u->cq_ring;
  u->sq_head = (unsigned *)(sq + params.sq_off.head);
  u->sq_tail = (unsigned *)(sq + params.sq_off.tail);
  u->sq_mask = *(unsigned *)(sq + params.sq_off.ring_mask);
  u->sq_entries = *(unsigned *)(sq + params.sq_off.ring_entries);
  u->sq_array = (unsigned *)(sq + params.sq_off.array);
  u->cq_head = (unsigned *)(cq + params.cq_off.head);
  u->cq_tail = (unsigned *)(cq + params.cq_off.tail);
  u->cq_mask = *(unsigned *)(cq + params.cq_off.ring_mask);
  u->cqes = (struct io_uring_cqe *)(cq + params.cq_off.cqes);
  return 0;
}

static void uring_handle_finalize(napi_env env, void *data, void *hint)
{
  (void)env;
  (void)hint;
  uring_t *u = data;
  uring_close(u);
  free(u);
}

/*
 * uringCreate(buffer, byteOffset): [handle, ringFd]. Probes IORING_OP_FUTEX_WAIT with a
 * value the word cannot hold right now (a wait that must fail with EAGAIN at once): an
 * older kernel answers EINVAL instead, and then this throws ENOSYS.
 */
static napi_value js_uring_create(napi_env env, napi_callback_info info)
{
  napi_value argv[2];
  double offset;
  uint32_t *word;
  bool detachable;
  if (!get_args(env, info, 2, argv) || !arg_word(env, argv[0], argv[1], &offset, &word, &detachable))
    return NULL;
  uring_t *u = calloc(1, sizeof *u);
  if (u == NULL) {
    throw_system(env, ENOMEM, "malloc", NULL);
    return NULL;
  }
  u->fd = -1;
  u->env = env;
  u->word = word;
  int err = uring_open(u);
  const char *syscall_name = "io_uring_setup";
  if (err == 0) {
    uint32_t unlikely = __atomic_load_n(word, __ATOMIC_SEQ_CST) ^ 0x80000000u;
    err = uring_submit(u, IORING_OP_FUTEX_WAIT, FUTEX2_SIZE_U32_FLAG, (uintptr_t)word, unlikely,
                       FUTEX_BITSET_MATCH_ANY, URING_WAIT_DATA);
    syscall_name = "io_uring_enter";
    if (err == 0) {
      long r;
      while ((r = syscall(__NR_io_uring_enter, u->fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0)) < 0 && errno == EINTR)
        ;
      int probe = r < 0 ? WAIT_ERROR : uring_reap(u);
      /* The word changing between the load and the wait would be a (harmless) WAIT_WOKEN. */
      if (probe != WAIT_NOT_EQUAL && probe != WAIT_WOKEN)
        err = -ENOSYS;
    }
  }
  if (err != 0) {
    uring_close(u);
    free(u);
    throw_system(env, -err, syscall_name, NULL);
    return NULL;
  }
  napi_value handle, fd_value, result;
  if (napi_create_reference(env, argv[0], 1, &u->buffer_ref) != napi_ok ||
      napi_create_external(env, u, uring_handle_finalize, NULL, &handle) != napi_ok) {
    uring_close(u);
    free(u);
    return fail_napi(env);
  }
  TRY(napi_type_tag_object(env, handle, &URING_TAG));
  TRY(napi_create_array_with_length(env, 2, &result));
  TRY(napi_create_int32(env, u->fd, &fd_value));
  TRY(napi_set_element(env, result, 0, handle));
  TRY(napi_set_element(env, result, 1, fd_value));
  return result;
}

static bool arg_uring(napi_env env, napi_value value, uring_t **u)
{
  if (!arg_handle(env, value, &URING_TAG, "uring", "a uring handle from uringCreate()", (void **)u))
    return false;
  if ((*u)->fd < 0) {
    napi_throw_error(env, "ERR_INVALID_STATE", "the uring waiter is closed");
    return false;
  }
  return true;
}

/* uringArm(handle, expected): submits FUTEX_WAIT(word, expected); completion makes the ring fd readable. */
static napi_value js_uring_arm(napi_env env, napi_callback_info info)
{
  napi_value argv[2];
  uring_t *u;
  uint32_t expected;
  if (!get_args(env, info, 2, argv) || !arg_uring(env, argv[0], &u) || !arg_futex_value(env, argv[1], &expected))
    return NULL;
  int err = uring_submit(u, IORING_OP_FUTEX_WAIT, FUTEX2_SIZE_U32_FLAG, (uintptr_t)u->word, expected,
                         FUTEX_BITSET_MATCH_ANY, URING_WAIT_DATA);
  if (err != 0) {
    throw_system(env, -err, "io_uring_enter", NULL);
    return NULL;
  }
  return make_undefined(env);
}

/* uringCancel(handle): asks the kernel to end a pending FUTEX_WAIT (it completes with WAIT_CANCELLED). */
static napi_value js_uring_cancel(napi_env env, napi_callback_info info)
{
  napi_value argv[1];
  uring_t *u;
  if (!get_args(env, info, 1, argv) || !arg_uring(env, argv[0], &u))
    return NULL;
  int err = uring_submit(u, IORING_OP_ASYNC_CANCEL, -1, URING_WAIT_DATA, 0, 0, URING_CANCEL_DATA);
  if (err != 0) {
    throw_system(env, -err, "io_uring_enter", NULL);
    return NULL;
  }
  return make_undefined(env);
}

/* uringReap(handle): the WAIT_* result of a completed FUTEX_WAIT, or -1 when none completed yet. */
static napi_value js_uring_reap(napi_env env, napi_callback_info info)
{
  napi_value argv[1];
  uring_t *u;
  if (!get_args(env, info, 1, argv) || !arg_uring(env, argv[0], &u))
    return NULL;
  return make_number(env, uring_reap(u));
}

/* uringClose(handle): closes the ring (cancelling a pending wait) and unmaps it. Idempotent. */
static napi_value js_uring_close(napi_env env, napi_callback_info info)
{
  napi_value argv[1];
  uring_t *u;
  if (!get_args(env, info, 1, argv) ||
      !arg_handle(env, argv[0], &URING_TAG, "uring", "a uring handle from uringCreate()", (void **)&u))
    return NULL;
  uring_close(u);
  return make_undefined(env);
}

static napi_value js_noop(napi_env env, napi_callback_info info)
{
  (void)env, (void)info;
  return NULL;
}

/* constants(): the values compiled into the addon, compared with the TypeScript side by a test. */
static napi_value js_constants(napi_env env, napi_callback_info info)
{
  (void)info;
  static const struct {
    const char *name;
    int value;
  } constants[] = {
      {"WAIT_WOKEN", WAIT_WOKEN},         {"WAIT_NOT_EQUAL", WAIT_NOT_EQUAL}, {"WAIT_TIMED_OUT", WAIT_TIMED_OUT},
      {"WAIT_CANCELLED", WAIT_CANCELLED}, {"WAIT_ERROR", WAIT_ERROR},
  };
  napi_value result, value;
  TRY(napi_create_object(env, &result));
  for (size_t i = 0; i < sizeof constants / sizeof constants[0]; i++) {
    TRY(napi_create_int32(env, constants[i].value, &value));
    TRY(napi_set_named_property(env, result, constants[i].name, value));
  }
  TRY(napi_create_int32(env, (int32_t)sysconf(_SC_PAGESIZE), &value));
  TRY(napi_set_named_property(env, result, "PAGE_SIZE", value));
  return result;
}

NAPI_MODULE_INIT()
{
#define FN(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL}
  const napi_property_descriptor properties[] = {
      FN("createFile", js_create_file),
      FN("openFile", js_open_file),
      FN("fstat", js_fstat),
      FN("stat", js_stat),
      FN("closeFd", js_close_fd),
      FN("unlink", js_unlink),
      FN("map", js_map),
      FN("unmap", js_unmap),
      FN("protect", js_protect),
      FN("lockTry", js_lock_try),
      FN("lockRelease", js_lock_release),
      FN("lockHeld", js_lock_held),
      FN("futexWait", js_futex_wait),
      FN("futexWake", js_futex_wake),
      FN("waiterCreate", js_waiter_create),
      FN("waiterArm", js_waiter_arm),
      FN("waiterCancel", js_waiter_cancel),
      FN("waiterClose", js_waiter_close),
      FN("eventfdCreate", js_eventfd_create),
      FN("eventfdRead", js_eventfd_read),
      FN("eventfdWrite", js_eventfd_write),
      FN("pollStart", js_poll_start),
      FN("pollStop", js_poll_stop),
      FN("pollRef", js_poll_ref),
      FN("unixConnect", js_unix_connect),
      FN("sendFds", js_send_fds),
      FN("recvFds", js_recv_fds),
      FN("peerCredentials", js_peer_credentials),
      FN("uringCreate", js_uring_create),
      FN("uringArm", js_uring_arm),
      FN("uringCancel", js_uring_cancel),
      FN("uringReap", js_uring_reap),
      FN("uringClose", js_uring_close),
      FN("noop", js_noop),
      FN("constants", js_constants),
  };
#undef FN
  TRY(napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties));
  return exports;
}
