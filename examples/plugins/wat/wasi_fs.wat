;; Tries to read a file through WASI: path_open on the conventional first preopen (fd 3),
;; then fd_read. The host never links path_open/fd_read, so this must be refused at load.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "etc/passwd")
  (data (i32.const 64) "{\"decision\":\"reject\",\"reason\":\"file opened\"}")
  (data (i32.const 128) "{\"decision\":\"admit\"}")
  (func (export "llorch_abi_version") (result i32) (i32.const 0x10000))
  (func (export "llorch_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "llorch_admit") (param i32 i32) (result i64)
    ;; path_open(dirfd=3, lookupflags=0, path=0, path_len=10, oflags=0, rights=all, inherit=all,
    ;;           fdflags=0, out_fd=512)
    (if (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 10)
                                  (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0)
                                  (i32.const 512)))
      (then (return (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 44)))))
    (i64.or (i64.shl (i64.const 128) (i64.const 32)) (i64.const 20)))
)
