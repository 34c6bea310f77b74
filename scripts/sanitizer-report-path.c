/*
 * Preloaded by scripts/test-sanitizers.sh after libasan and libubsan: sends UBSan's reports
 * to files as well. GCC's libubsan, started as ASan's plugin, keeps a report file of its own
 * and never reads log_path (ASAN_OPTIONS' log_path only reaches ASan's), so a UBSan report
 * would go to the process's stderr alone, which a test keeps to itself for its children.
 * This sets libubsan's report path to $SHMBUS_UBSAN_LOG_PATH (a report goes to PATH.<pid>).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>

__attribute__((constructor)) static void ubsan_report_path(void)
{
  const char *path = getenv("SHMBUS_UBSAN_LOG_PATH");
  if (path == NULL || *path == '\0')
    return;
  void *ubsan = dlopen("libubsan.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (ubsan == NULL)
    return;
  void (*set_report_path)(const char *) = (void (*)(const char *))dlsym(ubsan, "__sanitizer_set_report_path");
  if (set_report_path != NULL)
    set_report_path(path);
  dlclose(ubsan);
}
