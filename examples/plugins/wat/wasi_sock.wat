;; Tries to use sockets through WASI (sock_accept / sock_send on fd 3). Never linked by the
;; host: must be refused at load.
(module
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send"
    (func $send (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 128) "{\"decision\":\"admit\"}")
  (func (export "llorch_abi_version") (result i32) (i32.const 0x10000))
  (func (export "llorch_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "llorch_admit") (param i32 i32) (result i64)
    (drop (call $accept (i32.const 3) (i32.const 0) (i32.const 512)))
    (i64.or (i64.shl (i64.const 128) (i64.const 32)) (i64.const 20)))
)
