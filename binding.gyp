{
  "targets": [
    {
      "target_name": "shmbus",
      "sources": ["native/shmbus.c"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags!": ["-O3"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "cflags_c": ["-std=gnu11"],
      "libraries": ["-lpthread"]
    }
  ]
}
