;; A task-world component written by hand: its `run` grows a table by a million elements.
;; Rust cannot express `table.grow`, so this hostile guest is written in the component text
;; format; the test suite assembles it with the `wat` crate.
(component
  (core module $m
    (memory (export "memory") 1)
    (table $t 1 funcref)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (func (export "run") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (drop (table.grow $t (ref.null func) (i32.const 1000000)))
      (i32.const 0))
    (func (export "metadata") (result i32) unreachable))
  (core instance $i (instantiate $m))

  (type $kind' (enum "task" "gate"))
  (export $kind "plugin-kind" (type $kind'))
  (type $meta' (record (field "name" string) (field "version" string) (field "description" string)
                       (field "kind" $kind) (field "config-schema" (option string))))
  (export $meta "plugin-metadata" (type $meta'))
  (type $req' (record (field "run-id" string) (field "phase" string) (field "task" string)
                      (field "attempt" u32) (field "input" string) (field "context" string)
                      (field "config" string)))
  (export $req "task-request" (type $req'))
  (type $err' (variant (case "failed" string) (case "invalid-input" string) (case "invalid-config" string)))
  (export $err "task-error" (type $err'))

  (func $metadata (result $meta)
    (canon lift (core func $i "metadata") (memory (core memory $i "memory")) (realloc (core func $i "cabi_realloc"))))
  (export "metadata" (func $metadata))
  (func $run (param "request" $req) (result (result string (error $err)))
    (canon lift (core func $i "run") (memory (core memory $i "memory")) (realloc (core func $i "cabi_realloc"))))
  (export "run" (func $run))
)
