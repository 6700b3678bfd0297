;; Uses only the WASI functions every plugin gets, and tries to reach a file with them:
;; fd_prestat_get(3) would reveal a preopened directory, fd_write(3) / fd_close(3) would touch
;; an inherited descriptor. It admits only when all three answer EBADF (8), i.e. there is
;; nothing to reach; otherwise it rejects with "file descriptor reachable". It also writes a
;; line to stderr, which the host captures (and logs) instead of passing through.
(module
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "hello from a policy plugin\n")
  ;; iovec {buf = 0, len = 27} at 32
  (data (i32.const 32) "\00\00\00\00\1b\00\00\00")
  (data (i32.const 64) "{\"decision\":\"admit\"}")
  (data (i32.const 128) "{\"decision\":\"reject\",\"reason\":\"file descriptor reachable\"}")
  (func (export "llorch_abi_version") (result i32) (i32.const 0x10000))
  (func (export "llorch_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "llorch_admit") (param i32 i32) (result i64)
    (drop (call $write (i32.const 2) (i32.const 32) (i32.const 1) (i32.const 48)))
    (if (i32.and (i32.and
          (i32.eq (call $prestat (i32.const 3) (i32.const 512)) (i32.const 8))
          (i32.eq (call $write (i32.const 3) (i32.const 32) (i32.const 1) (i32.const 48)) (i32.const 8)))
          (i32.eq (call $close (i32.const 3)) (i32.const 8)))
      (then (return (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 20)))))
    (i64.or (i64.shl (i64.const 128) (i64.const 32)) (i64.const 58)))
)
