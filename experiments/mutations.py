"""Mutation audit: break the code on purpose, one line at a time, and check that the tests covering it fail.

Each Mutation replaces one snippet of one file (it must occur exactly once) in a temporary copy of the tree,
runs the tests it names there, and counts as caught when those tests fail. The untouched copy must pass the
same tests first, else a failure would prove nothing. The result table goes to docs/testing.md.

    python -m experiments.mutations                  # every mutation, writes docs/testing.md
    python -m experiments.mutations --only no-stream-sync --only graph-never-launched
    python -m experiments.mutations --list

To add a mutation, append a Mutation(...) to MUTATIONS (keep the name unique and say what it stands for)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
TENSORRT = "runtime/backends/tensorrt.py"
NVIDIA = "pspcore/nvidia.py"
GPU_CHECK = "experiments/gpu_check.py"
GPU_TENSORRT = "experiments/gpu_tensorrt.py"
GPU_TORCH = "experiments/gpu_torch.py"
GPU_TESTS = "tests/experiments/test_gpu_check.py"
TRT_TESTS = ("tests/runtime/test_tensorrt.py",)
TORCH_GPU = "pspnet/gpu.py"
TORCH_GPU_TESTS = "tests/pspnet/test_gpu.py"
CONFORMANCE = ("tests/runtime/test_fake_cuda_conformance.py",)
TARGET_TESTS = "tests/export/test_precision_targets.py"
PATHS_TESTS = "tests/export/test_verified_paths.py"
PRECISION_TESTS = "tests/export/test_precision.py"
ORT_SAME_FILE = (
    "tests/export/test_int8_ort.py::test_the_target_is_the_same_after_a_tensorrt_conversion_in_the_process",)


@dataclass(frozen=True)
class Mutation:
    name: str  # unique, short, used by --only
    file: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    mutated: str
    tests: tuple[str, ...]  # pytest node ids or files that must fail on the mutated tree
    stands_for: str = ""  # the defect it simulates (an issue item, a bug class)


MUTATIONS: list[Mutation] = [
    # ---- CUDA handling of the TensorRT runner (issue 21: the stand-in must catch these) ----
    Mutation("no-stream-sync", TENSORRT,
             '        cuda_check(cudart.cudaStreamSynchronize(stream), "inference")\n        times = ',
             "        times = ", TRT_TESTS, "results read before the stream finished"),
    Mutation("graph-never-launched", TENSORRT,
             '            cuda_check(import_cudart().cudaGraphLaunch(self._graph, self._stream), "cudaGraphLaunch")\n',
             "            pass\n", TRT_TESTS, "a captured graph that is never replayed (only the capture ran)"),
    Mutation("event-arguments-swapped", TENSORRT, "cudaEventElapsedTime(start, end)", "cudaEventElapsedTime(end, start)",
             TRT_TESTS, "cudaEventElapsedTime(end, start): negative times"),
    Mutation("graph-exec-never-destroyed", TENSORRT,
             "            import_cudart().cudaGraphExecDestroy(self._graph)\n", "", TRT_TESTS,
             "graph execs leaked on a shape change and at deactivate"),
    Mutation("copy-in-on-stream-0", TENSORRT, "cudaMemcpyKind.cudaMemcpyHostToDevice, stream)",
             "cudaMemcpyKind.cudaMemcpyHostToDevice, 0)", TRT_TESTS, "input copy on the default stream"),
    Mutation("copy-out-on-stream-0", TENSORRT, "cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)",
             "cudaMemcpyKind.cudaMemcpyDeviceToHost, 0)", TRT_TESTS, "output copy on the default stream"),
    Mutation("launch-on-stream-0", TENSORRT, "        elif not self._context.execute_async_v3(int(self._stream)):",
             "        elif not self._context.execute_async_v3(0):", TRT_TESTS, "engine launched on the default stream"),
    Mutation("graph-launch-on-stream-0", TENSORRT, "cudaGraphLaunch(self._graph, self._stream)",
             "cudaGraphLaunch(self._graph, 0)", TRT_TESTS, "graph replayed on the default stream"),
    Mutation("capture-on-stream-0", TENSORRT, "            launched = self._context.execute_async_v3(int(stream))",
             "            launched = self._context.execute_async_v3(0)", TRT_TESTS,
             "the captured launch goes to the default stream (an empty graph)"),
    # ---- the issue 21 fixes, each undone ----
    Mutation("N3-no-driver-called-too-old", NVIDIA,
             "        if driver == 0:\n            return NO_DRIVER\n        return (f\"cuda-python",
             "        return (f\"cuda-python", TRT_TESTS, "N3: no driver reported as a driver too old"),
    Mutation("N4-tensorrt-not-checked-against-driver", TENSORRT,
             "return cuda_unavailable_reason() or tensorrt_driver_reason(trt.__version__)",
             "return cuda_unavailable_reason()", TRT_TESTS, "N4: TensorRT's CUDA major never checked"),
    Mutation("N7-recapture-every-call", TENSORRT, " and self._shape not in self._uncapturable", "", TRT_TESTS,
             "N7: a shape that cannot be captured is captured again on every call"),
    Mutation("N7-failed-graph-leaked", TENSORRT,
             "                cudart.cudaGraphDestroy(graph)  # an instantiated exec keeps its own copy\n", "",
             TRT_TESTS,
             "N7: the captured graph is not destroyed"),
    Mutation("N8-stale-shape-after-failure", TENSORRT,
             "        self._shape = self._out_shape = None\n        if not self._context.set_input_shape",
             "        if not self._context.set_input_shape", TRT_TESTS,
             "N8: after an allocation failure the old shape and its freed buffers stay in use"),
    Mutation("N8-pinned-failure-leaks-device-buffer", TENSORRT,
             "            cudart.cudaFree(self.device)\n            self.device = 0\n            raise",
             "            raise", TRT_TESTS, "N8: a failed pinned allocation leaks the device buffer"),
    Mutation("deactivate-keeps-buffers", TENSORRT,
             "            for buffer in self._buffers.values():\n                buffer.free()\n", "", TRT_TESTS,
             "deactivate() does not free the I/O buffers"),
    # ---- experiments/gpu_check.py, gpu_tensorrt.py (N5, N6, comparing with an independent expected output) ----
    Mutation("N5-one-failure-ends-the-report", GPU_TENSORRT,
             "                except Exception as exc:  # one precision failing must not hide the others",
             "                except ImportError as exc:  # one precision failing must not hide the others",
             (f"{GPU_TESTS}::test_every_precision_reported_when_one_fails_its_build",),
             "N5: a TensorRT precision whose build fails ends the check without a report"),
    Mutation("N5-one-torch-variant-ends-the-report", GPU_TORCH,
             "            except Exception as exc:  # one variant failing must not hide the others",
             "            except ImportError as exc:  # one variant failing must not hide the others",
             (f"{GPU_TESTS}::test_a_bad_cuda_graph_fails_and_the_rest_is_still_reported",),
             "N5: a PyTorch variant that breaks ends the check without a report"),
    Mutation("N6-platform-check-cannot-fail", GPU_TENSORRT, "PASSED if built.gpu_name == gpu_name else FAILED",
             "PASSED",
             (f"{GPU_TESTS}::test_device_checks_on_the_cuda_stand_in",),
             "N6: the engine-platform check always passes"),
    Mutation("N6-skipped-reported-as-passed", GPU_TENSORRT,
             'return device_check(name, SKIPPED, "needs two GPUs of one model")',
             'return device_check(name, PASSED, "needs two GPUs of one model")',
             (f"{GPU_TESTS}::test_device_checks_on_the_cuda_stand_in",), "N6: a skipped two-GPU check counts as passed"),
    Mutation("N6-nothing-checked-passes", GPU_CHECK, "and any(s == PASSED for s in statuses)", "",
             (f"{GPU_TESTS}::test_verdict_needs_a_pass_and_no_failure",),
             "N6: a run where everything was skipped passes"),
    Mutation("torch-graph-replayed-on-its-own-input", GPU_CHECK,
             "        fresh = check_inputs(info, size, config.num_inputs, seed=2000)",
             "        fresh = first", (f"{GPU_TESTS}::test_a_bad_cuda_graph_fails_and_the_rest_is_still_reported",),
             "the CUDA graph is replayed on the input it was captured with (a stale graph passes)"),
    Mutation("trt-graph-replayed-on-its-own-input", GPU_TENSORRT, "        got = graph.infer(fresh)\n",
             "        got = graph.infer(first)\n", (f"{GPU_TESTS}::test_device_checks_on_the_cuda_stand_in",),
             "the TensorRT graph check replays the capture's own input"),
    Mutation("trt-judged-against-itself", GPU_TENSORRT,
             "    report = compare_outputs(expected, runner.infer(fresh))",
             "    report = compare_outputs(runner.infer(fresh), runner.infer(fresh))",
             (f"{GPU_TESTS}::test_every_precision_reported_when_one_fails_its_build",),
             "an engine's output compared with itself instead of the expected output"),
    # ---- issue 28: the GPU path, each fix undone ----
    Mutation("G1-torch-graph-on-the-process-capture-stream", TORCH_GPU,
             "            with cuda.graph(self.graph, pool=pool, stream=stream):",
             "            with cuda.graph(self.graph, pool=pool):",
             (f"{TORCH_GPU_TESTS}::test_graphs_on_a_second_gpu_record_the_work_and_replay_new_inputs",),
             "G1: a graph on cuda:1 captured on the stream made on GPU 0 records nothing (pytorch 87894)"),
    Mutation("G5-torch-graph-recaptured-on-every-shape-change", TORCH_GPU, "        graph = self.graphs.get(key)\n",
             "        graph = None\n",
             (f"{TORCH_GPU_TESTS}::test_one_graph_per_shape_in_one_pool_and_eager_past_the_limit",),
             "G5: one graph per runner, captured again whenever the shape changes"),
    Mutation("G5-graphs-unbounded", TORCH_GPU, "            if len(self.graphs) >= self.limit:",
             "            if False:",
             (f"{TORCH_GPU_TESTS}::test_one_graph_per_shape_in_one_pool_and_eager_past_the_limit",),
             "G5: a graph (and its output memory) kept for every shape ever seen"),
    Mutation("G5-logits-upcast-on-the-gpu", TORCH_GPU,
             '        staged = self._host("output", tuple(out.shape), out.dtype)',
             '        out = out.float()\n        staged = self._host("output", tuple(out.shape), out.dtype)',
             (f"{TORCH_GPU_TESTS}::test_output_copied_in_its_own_dtype_and_widened_on_the_host",),
             "G5: FP16/bf16 logits widened on the GPU before the copy back (twice the bytes)"),
    Mutation("G5-output-is-the-reused-host-buffer", TORCH_GPU,
             "        return staged.to(torch.float32, copy=True).numpy()",
             "        return staged.to(torch.float32).numpy()",
             (f"{TORCH_GPU_TESTS}::test_output_copied_in_its_own_dtype_and_widened_on_the_host",),
             "G5: an FP32 result that the next call's copy overwrites"),
    Mutation("G3-runner-fp32-runs-tf32", "pspnet/runner.py",
             "            with strict_fp32():  # cuDNN would otherwise run the convolutions in TF32\n"
             "                return self.model(x)", "            return self.model(x)",
             (f"{TORCH_GPU_TESTS}::test_torch_runner_fp32_runs_with_tf32_off",),
             "G3: the torch runner's FP32 on CUDA runs convolutions in TF32"),
    Mutation("G3-legacy-tf32-flags-on-a-new-torch", TORCH_GPU,
             "    return NEW_TF32_API if has_new else LEGACY_TF32_API",
             "    return LEGACY_TF32_API",
             (f"{TORCH_GPU_TESTS}::test_strict_fp32_uses_the_new_api_on_this_torch_and_restores_it",),
             "G3: the legacy allow_tf32 flags mixed with torch 2.9's fp32_precision"),
    Mutation("G2-gpu-row-divided-by-the-cpu-limit", "benchmarks/limits.py",
             '        if r.processor != "cpu":\n            continue\n', "",
             ("tests/benchmarks/test_limits.py::test_a_gpu_row_is_not_divided_by_the_cpu_limit",),
             "G2: TensorRT and torch-on-CUDA rows divided by the CPU's GEMM rate"),
    Mutation("G4-a-later-step-loses-the-report", GPU_TORCH,
             "    except Exception as exc:\n        errors.append(",
             "    except ImportError as exc:\n        errors.append(",
             (f"{GPU_TESTS}::test_results_gathered_before_a_later_step_raises_are_kept",),
             "G4: an exception after the per-variant loops loses every result gathered"),
    Mutation("G4-a-device-check-ends-the-others", GPU_TENSORRT,
             "        except Exception as exc:\n            results.append(device_check(name, ERROR",
             "        except ImportError as exc:\n            results.append(device_check(name, ERROR",
             (f"{GPU_TESTS}::test_results_gathered_before_a_later_step_raises_are_kept",),
             "G4: one device check that raises loses the others"),
    Mutation("G4-refused-engine-left-loaded", GPU_TENSORRT,
             "            with TensorRTRunner(copy, device=config.device):"
             "  # if it wrongly loads, it is released again\n"
             '                refused = "loaded it"',
             "            TensorRTRunner(copy, device=config.device).activate()\n"
             '            refused = "loaded it"',
             (f"{GPU_TESTS}::test_a_wrongly_loading_refused_engine_fails_and_is_released",),
             "G4: the refused-engine check leaves a runner loaded when it wrongly activates"),
    Mutation("G4-capture-error-not-cleared", TENSORRT,
             "            cudart.cudaGetLastError()\n            self._uncapturable.add",
             "            self._uncapturable.add", TRT_TESTS,
             "G4: a failed capture's CUDA error fails TensorRT's next launch"),
    Mutation("G4-failed-begin-capture-raises", TENSORRT,
             '            why = f"cudaStreamBeginCapture failed',
             '            raise PSPError("cudaStreamBeginCapture failed")\n'
             '            why = f"cudaStreamBeginCapture failed',
             TRT_TESTS, "G4: a failed cudaStreamBeginCapture raises on every call instead of marking the shape"),
    Mutation("G4-reported-error-left-pending", NVIDIA,
             "        cudart.cudaGetLastError()\n        _, text = cudart.cudaGetErrorString(err)",
             "        _, text = cudart.cudaGetErrorString(err)", TRT_TESTS,
             "G4: an error cuda_check reported also fails the next TensorRT launch"),
    Mutation("G-quick-recapture-judged-on-one-input", "experiments/gpu_quick.py",
             "            full, expected = sets[i % 2], answers[i % 2]",
             "            full, expected = sets[0], answers[0]",
             (f"{GPU_TESTS}::test_quick_run_on_a_stand_in_device",),
             "--quick's recapture check replays the capture's own input (a stale graph passes)"),
    Mutation("G5-ort-tensorrt-provider-without-precision-flags", "runtime/backends/onnxruntime.py",
             'TENSORRT_PRECISION_FLAGS = {"fp16": "trt_fp16_enable", "int8": "trt_int8_enable"}',
             "TENSORRT_PRECISION_FLAGS = {}",
             ("tests/runtime/test_onnxruntime_profile.py::"
              "test_the_tensorrt_provider_gets_the_builder_flag_of_the_model_precision",),
             "G5: an FP16 or Q/DQ model given to ONNX Runtime's TensorRT provider without its builder flag"),
    # ---- the stand-ins held to the real APIs ----
    Mutation("stand-in-enum-value-wrong", "tests/runtime/fake_cuda.py", "    cudaErrorStreamCaptureImplicit = 906",
             "    cudaErrorStreamCaptureImplicit = 905", CONFORMANCE, "the stand-in's error code differs from CUDA's"),
    Mutation("stand-in-wrong-arity", "tests/runtime/fake_cuda.py", "    def cudaGraphInstantiate(self, graph, flags):",
             "    def cudaGraphInstantiate(self, graph, flags=0, *rest):", CONFORMANCE,
             "the stand-in accepts a call the real binding refuses"),
    Mutation("stand-in-return-arity", "tests/runtime/fake_cuda.py",
             "        if int(stream) == 0 or int(stream) not in self.streams:\n"
             "            return (Error.cudaErrorInvalidResourceHandle,)\n        self._complete",
             "        if int(stream) == 0 or int(stream) not in self.streams:\n"
             "            return Error.cudaErrorInvalidResourceHandle, None\n        self._complete", CONFORMANCE,
             "the stand-in returns a tuple the real call does not"),
    Mutation("tensorrt-name-misspelt", "export/engine/build.py", "trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED",
             "trt.NetworkDefinitionCreationFlag.STRONGLY_TYPE", ("tests/runtime/test_tensorrt_names.py",),
             "a TensorRT enum member the bindings do not have"),

    # ---- Triton export, provider profile, timing cache, serving hygiene (issue 21: N1, N2, N9, N10, N12) ----
    Mutation("N1-engine-max-batch-not-capped", "export/triton/repository.py",
             "    limit = _profile_batch_limit(model) if batchable else None\n", "    limit = None\n",
             ("tests/export/test_triton.py::test_engine_built_for_batch_1_is_served_with_max_batch_1",),
             "N1: max_batch_size 8 written for an engine built for batch 1"),
    Mutation("N1-profile-min-batch-above-1-accepted", "export/triton/repository.py", "    if low > 1:\n", "    if False:\n",
             ("tests/export/test_triton.py::test_engine_profile_starting_above_batch_1_is_refused",),
             "N1: a profile Triton cannot feed (its smallest batch above 1)"),
    Mutation("N9-unknown-tensorrt-type-written-as-fp32", "export/triton/repository.py",
             '        return tuple(TensorSpec(t["name"], _triton_type(t, engine_name), tuple(t["shape"]))',
             '        return tuple(TensorSpec(t["name"], TENSORRT_TO_TRITON.get(t["dtype"], "FP32"), tuple(t["shape"]))',
             ("tests/export/test_triton.py::test_engine_tensor_type_without_a_triton_type_is_refused",),
             "N9: FP8/INT4/FP4 tensors silently written as FP32"),
    Mutation("N10-auto-kind-gpu-for-onnxruntime", "export/triton/repository.py",
             '        return {PLATFORMS["plan"]: "gpu", PYTHON: "cpu"}.get(platform, "auto")',
             '        return "cpu" if platform == PYTHON else "gpu"',
             ("tests/export/test_triton.py::test_onnx_config_matches_the_model_and_its_metadata",),
             "N10: KIND_GPU for an ONNX Runtime model, refused by a CPU-only server"),
    Mutation("N2-provider-opt-at-max-batch", "runtime/backends/onnxruntime.py",
             "    dims = [(n or 1, c or 3, h, w), (n or 1, c or 3, h, w), (n or max_batch, c or 3, h, w)]",
             "    dims = [(n or 1, c or 3, h, w), (n or max_batch, c or 3, h, w), (n or max_batch, c or 3, h, w)]",
             ("tests/runtime/test_onnxruntime_profile.py",), "N2: the provider's profile tuned for the largest batch"),
    Mutation("N2-spec-not-narrowed-to-profile", "runtime/backends/onnxruntime.py",
             "            spec = profile_input_spec(spec, self.loader.profile)\n", "            pass\n",
             ("tests/runtime/test_onnxruntime_profile.py",), "N2: requests outside the profile reach the provider"),
    Mutation("N12-timing-cache-overwritten-not-merged", "export/engine/build.py",
             "                cache.combine(config.create_timing_cache(path.read_bytes()), False)\n", "                pass\n",
             ("tests/export/test_engine.py::test_timing_cache_is_merged_under_a_lock_with_what_another_build_wrote",),
             "N12: a concurrent build's timings lost"),
    Mutation("N12-timing-cache-written-without-lock", "export/engine/build.py", "    with _locked(path):\n",
             "    with contextlib.nullcontext():\n",
             ("tests/export/test_engine.py::test_timing_cache_is_merged_under_a_lock_with_what_another_build_wrote",),
             "N12: two builds write the cache at once"),
    Mutation("serve-stop-kills-main-process-only", "runtime/serve.py", "            os.killpg(self.process.pid, signum)\n",
             "            os.kill(self.process.pid, signum)\n",
             ("tests/runtime/test_serve.py::test_stop_kills_the_whole_process_group_of_a_server_that_ignores_sigterm",),
             "python-backend stubs orphaned when psp-serve stops"),
    Mutation("shm-one-failed-release-skips-the-rest", "runtime/backends/triton.py",
             "            failure = failure or exc\n", "            raise\n",
             ("tests/runtime/test_triton_shm.py::test_every_region_is_destroyed_when_the_server_refuses_to_unregister",),
             "one failed unregister leaves the other shared-memory regions behind"),
    Mutation("shm-no-cleanup-at-exit", "runtime/backends/triton_shm.py", "@atexit.register\n", "",
             ("tests/runtime/test_triton_shm.py::test_regions_never_released_are_unlinked_at_exit",),
             "regions of a runner never released outlive the process"),
    Mutation("shm-runner-never-releases", "runtime/backends/triton.py", "            _release_all(regions)\n",
             "            pass\n",
             ("tests/runtime/test_triton_real.py::test_psp_infer_shm_interrupted_by_ctrl_c_leaves_no_region",),
             "--shm regions outlive an interrupted psp-infer"),
    # ---- verified FP16/INT8 conversion (issue 21: the written file is checked) ----
    Mutation("written-model-unrepaired", "export/precision/verified.py",
             "    state.target.write(outcome.chosen.model, state.source_model,",
             "    state.target.write(outcome.plain.model, state.source_model,",
             ("tests/export/test_verified.py::test_fp16_repair_keeps_the_hostile_node_fp32",),
             "the unrepaired model written while the report says repaired"),
    Mutation("repair-ignores-miou-gate", "export/precision/repair.py",
             "        candidate.passed = candidate.verdict.passes(job.min_agreement, job.max_miou_drop, job.gate_on)",
             "        candidate.passed = candidate.verdict.passes(job.min_agreement, None, job.gate_on)",
             ("tests/export/test_verified.py::test_repair_honours_the_miou_gate",),
             "repair accepting a model over the mIoU drop"),
    Mutation("written-file-not-rechecked", "export/precision/verified.py",
             "    if not passed:\n", "    if False:\n",
             ("tests/export/test_verified.py::test_written_file_below_the_gate_is_removed",),
             "a written file that fails its gate kept"),
    # ---- the onnxruntime INT8 target: the same file in any process ----
    Mutation("ort-registries-left-patched", "export/precision/targets/int8_tensorrt.py",
             "        for table, before in tables:\n            table.clear()\n            table.update(before)\n", "",
             ORT_SAME_FILE,
             "ModelOpt's operators left in ONNX Runtime's registries after a tensorrt conversion"),
    # ---- backend options declared once (issue 27): flags, refusals and the --device mapping from the declaration ----
    Mutation("refusal-names-api-options", "pspcore/options.py",
             "        own = [d.flag for d in cls.declared() if d.cli]",
             "        own = [flag_of(d.name) for d in cls.declared()]", ("tests/test_backend_flags.py",),
             "a refusal naming flags no command has (--providers, --device-id, --trt-max-batch)"),
    Mutation("tensorrt-cuda-graphs-off-the-command-line", TENSORRT,
             '"(saves the per-layer launch overhead)", cli=True)', '"(saves the per-layer launch overhead)")',
             ("tests/runtime/test_tensorrt.py::test_psp_infer_cuda_graphs_reaches_the_tensorrt_runner",),
             "TensorRT's CUDA-graph mode reachable from no command"),
    Mutation("flag-reaches-an-api-only-option", "pspcore/cli.py",
             "    flags = declaration.check(name, wanted, command_line=True)",
             "    flags = declaration.check(name, wanted)",
             ("tests/test_backend_flags.py::test_a_flag_reaches_only_an_option_declared_for_the_command_line",),
             "a command-line flag silently set a backend's Python-only option of the same name"),
    Mutation("bench-options-reach-the-baseline", "benchmarks/loading.py",
             "    extra = {} if candidate.baseline else {", "    extra = {} if False else {",
             ("tests/benchmarks/test_bench.py::"
              "test_backend_options_reach_the_runners_that_take_them_but_never_the_baseline",),
             "psp-bench's --precision/--cuda-graphs changing the eager FP32 baseline"),
    Mutation("bench-option-silently-dropped", "benchmarks/cli.py",
             "        if not any(takes_option(name, option) for name in measured):",
             "        if False:",
             ("tests/benchmarks/test_cli.py::test_a_backend_option_no_measured_runner_takes_is_refused",),
             "psp-bench --shm (or --cuda-graphs) ignored when no measured backend takes it"),
    Mutation("suffix-dispatch-case-sensitive", "pspcore/files.py",
             "    return Path(str(path)).suffix.lower()", "    return Path(str(path)).suffix",
             ("tests/pspcore/test_files.py::test_one_dispatch_on_a_model_files_suffix",),
             "model.ONNX or model.Engine dispatched differently from its lower-case name"),
    # ---- precision targets: registered where they are defined, asked by the pipeline ----
    Mutation("target-declaration-unchecked", "export/precision/target.py",
             "    if problems:\n        raise ValueError", "    if False:\n        raise ValueError",
             (f"{TARGET_TESTS}::test_a_declaration_that_does_not_hold_is_refused",),
             "a precision target whose gate, methods or name cannot work registered anyway"),
    Mutation("int8-targets-frozen-at-import", "export/precision/cli.py",
             "        return tuple(self.choices_of())", "        return ('tensorrt', 'onnxruntime', 'openvino')",
             (f"{TARGET_TESTS}::test_a_registered_target_is_offered_and_converted_by_psp_export_int8",),
             "psp-export int8 refusing a registered INT8 target"),
    Mutation("target-gate-ignored", "export/precision/verified.py",
             "options.min_agreement is not None else target.default_gate",
             "options.min_agreement is not None else 0.98",
             (f"{TARGET_TESTS}::test_a_new_precision_runs_through_the_verified_conversion",),
             "a conversion gated at another target's default instead of its own"),
    # ---- one session loader, one thread rule, facts once, no circles (issue 27 items 3-5) ----
    Mutation("session-ignores-thread-rule", "pspcore/onnx_session.py", "    threads = cpu_threads(threads)\n", "",
             ("tests/pspcore/test_onnx_session.py::test_threads_follow_the_one_rule",),
             "sessions ignore OMP_NUM_THREADS (each process a thread per core on shared cores)"),
    Mutation("export-checks-fixed-threads", "export/evaluation.py",
             'threads: int | None = None, backend: str = "onnxruntime"',
             'threads: int | None = 2, backend: str = "onnxruntime"',
             ("tests/pspcore/test_onnx_session.py::test_export_checks_follow_the_variable",),
             "conversion checks on a thread count of their own (CHECK_THREADS) instead of --threads/OMP_NUM_THREADS"),
    Mutation("in-memory-model-blamed-on-user", "pspcore/onnx_session.py",
             'name, error = "the in-memory model", PSPError', 'name, error = "the in-memory model", InputError',
             ("tests/pspcore/test_onnx_session.py::test_a_model_that_does_not_load_is_one_line",),
             "a model made in memory that fails to load reported as a usage error (exit 2)"),
    Mutation("openvino-labels-own-dtype-rule", "runtime/backends/openvino.py",
             "dtype = graph_label_dtype(0 if classes.is_dynamic else classes.get_length())",
             "dtype = graph_label_dtype(0 if classes.is_dynamic else classes.get_length() + 1)",
             ("tests/runtime/test_openvino.py::test_labels_in_the_graph_have_the_exported_models_type",),
             "OpenVINO's in-graph labels re-derive the label type and differ from the export at 256 classes"),
    Mutation("benchmarks-record-imported-back-up", "benchmarks/loading.py",
             "from benchmarks.records import BenchConfig, Candidate, Unavailable\n",
             "from benchmarks.bench import BenchConfig\nfrom benchmarks.records import Candidate, Unavailable\n",
             ("tests/test_layers.py::test_no_import_circles_outside_experiments",),
             "a shared type read from the module above: an import circle"),
    # ---- live sources, real-time mode and the analytics sinks (issue 29) ----
    Mutation("realtime-keeps-the-oldest", "runtime/realtime.py", "            self._item = frame\n",
             "            self._item = self._item or frame\n", ("tests/runtime/test_realtime.py",),
             "a real-time slot that keeps a stale frame instead of the newest"),
    Mutation("realtime-drops-uncounted", "runtime/realtime.py", "                self.dropped += 1", "                pass",
             ("tests/runtime/test_realtime.py",), "dropped frames not counted or reported"),
    Mutation("realtime-takes-while-the-model-is-busy", "runtime/pipeline.py",
             "                    stages.acquire(credits)\n", "                    pass\n",
             ("tests/runtime/test_realtime.py",),
             "frames taken while the model is busy, so they wait and go stale (latency unbounded by the slot)"),
    Mutation("stream-never-reopened", "runtime/sources.py",
             "            if image is None:\n                image = self._reopen()\n", "",
             ("tests/runtime/test_streams.py::test_http_mjpeg_stream_killed_and_restarted",),
             "a dropped stream taken for the end instead of reopened"),
    Mutation("back-off-unbounded", "runtime/sources.py", "yield min(self.max_wait, self.wait * 2 ** attempt)",
             "yield self.wait * 2 ** attempt", ("tests/runtime/test_sources.py",),
             "reconnect waits that grow without bound"),
    Mutation("missing-camera-not-checked", "runtime/sources.py",
             "        if isinstance(camera, str) and not os.path.exists(camera):", "        if False:",
             ("tests/runtime/test_sources.py::test_missing_camera_and_unknown_sources_fail_in_one_line",),
             "a camera path that does not exist reported as a vague open failure"),
    Mutation("raw-short-frame-reshaped", "runtime/sources.py", "            if len(data) < frame_bytes:\n",
             "            if not data:\n", ("tests/runtime/test_sources.py::test_raw_frames_from_a_stream",),
             "a truncated raw frame on stdin taken for a frame"),
    Mutation("rle-counts-off-by-one", "runtime/postprocess.py", "np.concatenate((starts, [flat.size]))",
             "np.concatenate((starts, [flat.size - 1]))", ("tests/runtime/test_jsonl.py",),
             "--jsonl label maps that do not decode to the PNG masks"),
    Mutation("empty-jsonl-left-behind", "runtime/outputs.py",
             "        if exc_type is not None and self._jsonl and not self.count:", "        if False:",
             ("tests/runtime/test_jsonl.py::test_a_failed_run_keeps_the_lines_written_and_no_empty_file",),
             "a run that failed before its first frame leaving an empty .jsonl"),
    Mutation("realtime-not-default-for-live-sources", "runtime/pipeline.py",
             "    realtime = source.live if options.realtime is None else options.realtime",
             "    realtime = bool(options.realtime)",
             ("tests/runtime/test_realtime.py::test_slow_model_on_a_live_source_drops_stale_frames",),
             "a camera or stream segmented frame by frame, falling ever further behind"),
    Mutation("server-time-not-subtracted", "runtime/stages.py", "max(0.0, round_trips_s - server_s)",
             "round_trips_s", ("tests/runtime/test_jsonl.py::test_server_time_splits_the_round_trips",),
             "a Triton round trip counted whole as client + network"),
    # ---- issue 30: the verified conversion's failure paths, its gate's boundary and how sure it is ----
    Mutation("failure-after-write-keeps-file", "export/precision/verified.py",
             "            if state.wrote:\n                target.remove(state.dst)",
             "            if False:\n                target.remove(state.dst)",
             (f"{PATHS_TESTS}::test_a_failure_after_writing_leaves_nothing",),
             "a failure after the file is written (its re-check, the report) leaves the file at the output path"),
    Mutation("written-file-miou-not-rechecked", "export/precision/verified.py",
             "        passed = state.written.passes(state.gate, options.max_miou_drop, options.gate_on)",
             "        passed = state.written.passes(state.gate, None, options.gate_on)",
             (f"{PATHS_TESTS}::test_every_part_of_the_gate_is_applied_to_the_written_file",),
             "the written file re-checked on agreement only: its mIoU drop over the limit kept"),
    Mutation("written-file-lower-bound-not-rechecked", "export/precision/verified.py",
             "        passed = state.written.passes(state.gate, options.max_miou_drop, options.gate_on)",
             "        passed = state.written.passes(state.gate, options.max_miou_drop)",
             (f"{PATHS_TESTS}::test_the_lower_bound_gate_is_applied_to_the_written_file",),
             "--gate-on lower-bound judged on the candidates but not on the written file"),
    Mutation("repair-forgets-what-helped", "export/precision/repair.py",
             "                base, best = equalized.path, candidate\n", "                best = candidate\n",
             (f"{PATHS_TESTS}::test_repair_continues_from_the_step_that_helped",),
             "after an equalization that helped, repair's fallback converts the unequalized source again"),
    Mutation("repair-start-not-reported", "export/precision/verified.py",
             "repair_continued_from=outcome.continued_from,", "repair_continued_from=None,",
             (f"{PATHS_TESTS}::test_repair_continues_from_the_step_that_helped",),
             "the report silent on which model repair continued from"),
    Mutation("gate-excludes-its-boundary", "export/precision/verdict.py",
             "return bool(self.figure(on) >= min_agreement and drop_ok)",
             "return bool(self.figure(on) > min_agreement and drop_ok)",
             (f"{PATHS_TESTS}::test_at_the_gate_passes_and_one_pixel_below_fails",),
             "a model exactly at --min-agreement refused (the documented gate is >=)"),
    Mutation("gate-tolerates-just-below", "export/precision/verdict.py",
             "return bool(self.figure(on) >= min_agreement and drop_ok)",
             "return bool(self.figure(on) >= min_agreement - 1e-3 and drop_ok)",
             (f"{PATHS_TESTS}::test_at_the_gate_passes_and_one_pixel_below_fails",),
             "a model just below --min-agreement passed (a rounding allowance)"),
    Mutation("lower-bound-gate-ignored", "export/precision/verdict.py",
             'return self.lower_bound if on == "lower-bound" else self.agreement', "return self.agreement",
             (f"{PATHS_TESTS}::test_per_image_figures_and_the_lower_bound_gate",),
             "--gate-on lower-bound judging the pooled figure: a model that wrecks one image in twelve passes"),
    Mutation("lower-bound-overconfident", "export/precision/verdict.py",
             "values.std(ddof=1) / math.sqrt(len(values))", "values.std(ddof=1) / len(values)",
             (f"{PATHS_TESTS}::test_per_image_figures_and_the_lower_bound_gate",),
             "a lower bound narrower than the images support (as a bound over pixels would be)"),
    Mutation("per-image-is-pooled", "export/precision/verdict.py",
             "per_image = tuple(compare_outputs(reference[i:i + 1], candidate[i:i + 1]).argmax_agreement",
             "per_image = tuple(report.argmax_agreement",
             (f"{PATHS_TESTS}::test_per_image_figures_and_the_lower_bound_gate",),
             "every image reported at the pooled figure: no worst image, no spread, a bound as sure as pooled"),
    Mutation("uncertain-never-said", "export/precision/verdict.py",
             "        return self.images < MIN_SURE_IMAGES", "        return False",
             (f"{PATHS_TESTS}::test_too_few_images_are_reported_uncertain",),
             "a gate judged on three images reads the same as one judged on three hundred"),
    Mutation("ort-logits-quantized", "export/precision/targets/int8_onnxruntime.py",
             "    return float_output_region(onnx.load(str(out)))", "    return onnx.load(str(out))",
             (f"{PRECISION_TESTS}::test_int8_runs_in_onnxruntime_and_agrees",),
             "ONNX Runtime's Q/DQ on the classifier's output: logits rounded to 8 bits before upsampling and argmax"),
    Mutation("ort-weights-per-tensor", "export/precision/targets/int8_onnxruntime.py",
             "    per_channel: bool = True", "    per_channel: bool = False",
             (f"{PRECISION_TESTS}::test_int8_runs_in_onnxruntime_and_agrees",),
             "one weight scale per conv instead of one per output channel"),
    Mutation("tensorrt-output-region-quantized", "export/precision/targets/int8_tensorrt.py",
             'high_precision_dtype="fp32", log_level="ERROR")',
             'high_precision_dtype="fp32", log_level="ERROR", op_types_to_quantize=["Conv", "Resize"])',
             (f"{PRECISION_TESTS}::test_int8_runs_in_onnxruntime_and_agrees",),
             "ModelOpt told to quantize the logits' Resize: Q/DQ inside the output region"),
    Mutation("nncf-output-region-quantized", "export/precision/targets/int8_openvino.py",
             "    kept = [*pooling_nodes(model), *output_region(model), *exclude]",
             "    kept = [*pooling_nodes(model), *exclude]",
             ("tests/export/test_openvino_target.py::test_nncf_keeps_the_nodes_repair_names_unquantized",),
             "NNCF's ignored scope without the output region: Q/DQ on the logits' way to the upsampling"),
    # ---- issue 30: the arithmetic rules against independent computations (hypothesis) and wide label ids ----
    Mutation("sliding-stride-floored", "pspcore/sliding.py", "stride = math.ceil(window * STRIDE_RATE)",
             "stride = math.floor(window * STRIDE_RATE)", ("tests/test_properties.py",),
             "windows every floor(2/3 w) instead of semseg's ceil"),
    Mutation("sliding-pad-odd-pixel-before", "pspcore/sliding.py", "pad = ((padded[0] - h) // 2,",
             "pad = ((padded[0] - h + 1) // 2,", ("tests/test_properties.py",),
             "the odd padding row before the image instead of after"),
    Mutation("pooling-window-one-too-wide", "export/onnx/pooling.py", "(scaled < (row + 1) * length)",
             "(scaled <= (row + 1) * length)", ("tests/test_properties.py",),
             "an averaging window that takes one position past ceil((i+1)L/b)-1"),
    Mutation("label-dtype-255-classes", "pspcore/label_maps.py", "0 < num_classes <= 256 else np.uint16",
             "0 < num_classes < 256 else np.uint16", ("tests/test_properties.py",),
             "the uint8/uint16 boundary off by one"),
    Mutation("openvino-labels-narrowed-to-u8", "runtime/backends/openvino.py",
             "labels = ops.result(ids if dtype == np.int32 else ops.convert(ids, dtype))",
             "labels = ops.result(ids if dtype == np.uint8 else ops.convert(ids, np.uint8))",
             ("tests/runtime/test_many_classes.py",),
             "OpenVINO's appended ArgMax casts ids past 255 to u8"),
    Mutation("ensemble-labels-narrowed-to-u8", "runtime/triton_steps.py",
             "    labels = to_labels(scores, num_classes)[0]\n",
             "    labels = to_labels(scores, num_classes)[0].astype(np.uint8)\n",
             ("tests/runtime/test_many_classes.py", "tests/test_label_types.py"),
             "the Triton ensemble's postprocess step wraps ids past 255 (the audit's copy is seen by the in-process "
             "test: Triton's python stub imports the installed tree, not PYTHONPATH's)"),
    Mutation("openvino-f32-hint-not-asked", "runtime/backends/openvino.py",
             "        config = {hints.inference_precision: wanted}",
             "        config = {} if wanted == 'f32' else {hints.inference_precision: wanted}",
             ("tests/runtime/test_openvino_hint.py",), "FP32 compiled without the f32 hint (bf16 on AMX/AVX512-BF16)"),
    Mutation("mmseg-1x-config-text-ignored", "pspnet/mmseg.py", 'text = meta.get("config", meta.get("cfg"))',
             'text = meta.get("config")', ("tests/pspnet/test_mmseg.py",), "mmseg 1.x's cfg text never read"),
    Mutation("mmseg-missing-dilations-default", "pspnet/mmseg.py", 'backbone.get("dilations", (1, 1, 1, 1))',
             'backbone.get("dilations", (1, 1, 2, 4))', ("tests/pspnet/test_mmseg.py",),
             "a key missing from the config text takes another default than mmseg's class"),
    Mutation("writer-not-drained-before-stop", "runtime/pipeline.py",
             "        stages.put(finished, _END)\n        threads[1].join()\n", "        stages.put(finished, _END)\n",
             ("tests/runtime/test_pipeline.py::test_every_frame_is_written_when_the_writer_is_the_slowest_stage",),
             "the pipeline stops before its writer has written the last batches"),
    Mutation("empty-partial-kept", "runtime/video.py",
             "if exc_type is KeyboardInterrupt and self.keep_partial and self.frames:",
             "if exc_type is KeyboardInterrupt and self.keep_partial:",
             ("tests/runtime/test_pipeline.py::test_ctrl_c_before_the_first_frame_leaves_nothing",),
             "Ctrl-C before the first frame keeps an empty out.partial.mp4"),
    Mutation("masks-folder-before-the-first-frame", "runtime/outputs.py",
             "        self._jsonl = self.enter_context(",
             "        self.masks_dir and self.masks_dir.mkdir(parents=True, exist_ok=True)\n"
             "        self._jsonl = self.enter_context(",
             ("tests/runtime/test_pipeline.py::test_ctrl_c_before_the_first_frame_leaves_nothing",),
             "an empty --masks-dir left by a run stopped before its first frame"),
    # ---- bf16 on bf16 CPUs (issue 28): the logits' resize as marked MatMuls ----
    Mutation("bf16-logits-resize-left-interpolate", "export/precision/targets/bf16.py",
             '    resize_as_matmuls(model, [n for n in kept if n.op_type == "Resize"])\n', "",
             ("tests/export/test_openvino_bf16.py::"
              "test_logits_resize_is_written_as_marked_matmuls_that_keep_the_fp32_logits",),
             "the logits Interpolate left in the bf16 IR, which OpenVINO runs in bf16 on AVX512-BF16 CPUs"),
    Mutation("bf16-resize-matrix-off-by-one", "export/precision/targets/bf16.py",
             'named(ops.subtract(l_out, one), what + "/out_1")', "l_out",
             ("tests/export/test_openvino_bf16.py::"
              "test_logits_resize_is_written_as_marked_matmuls_that_keep_the_fp32_logits",),
             "resize matrices that are not align_corners bilinear ((L_in-1)/L_out steps)"),
    Mutation("bf16-layers-never-flags", "experiments/bf16_layers.py",
             '            if mark and precision == "bf16" and kind not in SHAPE_ONLY:',
             "            if False:",
             ("tests/experiments/test_bf16_layers.py",),
             "the bf16-CPU check passing while a kept layer runs in bf16"),
    Mutation("opencv-pool-beside-the-model", "runtime/pipeline.py", "    cv2.setNumThreads(1)\n", "",
             ("tests/runtime/test_pipeline.py::test_opencv_runs_serially_beside_the_model_and_is_restored",),
             "OpenCV's thread pool in the pipeline's stages competing with the model for the cores"),
    Mutation("opencv-threads-not-restored", "runtime/pipeline.py", "        cv2.setNumThreads(opencv_threads)\n", "",
             ("tests/runtime/test_pipeline.py::test_opencv_runs_serially_beside_the_model_and_is_restored",),
             "psp-infer's pipeline leaving the process's OpenCV thread count changed"),
    Mutation("live-video-not-paced", "runtime/pipeline.py", "options.keep_partial, rle=options.jsonl_rle, paced=realtime)",
             "options.keep_partial, rle=options.jsonl_rle, paced=False)",
             ("tests/runtime/test_realtime.py::test_slow_model_on_a_live_source_drops_stale_frames",
              "tests/runtime/test_streams.py"),
             "a real-time run's video holding only the segmented frames: it plays faster than the source"),
    Mutation("pacing-never-repeats", "runtime/outputs.py", "        repeats = max(0, round(late))",
             "        repeats = 0", ("tests/runtime/test_realtime.py",),
             "a dropped frame's slot left out of the video instead of holding the frame before it"),
    Mutation("mjpeg-on-ffmpeg-clock", "runtime/sources.py", 'in ("http", "https") and codec == b"MJPG"',
             'in ("http", "https") and codec == b"none"',
             ("tests/runtime/test_streams.py::test_http_mjpeg_stream_killed_and_restarted",),
             "HTTP MJPEG stamped on FFmpeg's assumed 25 fps clock and reported as 25 fps"),
    Mutation("bf16-row-against-fp32-rate", "benchmarks/limits.py",
             'return "bf16" if precision.startswith("bf16") and "bf16" in measured else "fp32"', 'return "fp32"',
             ("tests/benchmarks/test_limits.py::"
              "test_a_bf16_model_is_set_against_the_bf16_rate_where_one_was_measured",),
             "a bf16 row on a bf16 CPU divided by the FP32 GEMM rate (far above 100%)"),
    Mutation("results-drop-sections-not-rerun", "experiments/results.py",
             "            if kept.get(section.title):", "            if False:",
             ("tests/experiments/test_results.py",),
             "experiments.results --only NAME rewriting the page with that section alone"),
    Mutation("latency-five-calls-only", "export/evaluation.py",
             "    while len(times) < runs or time.perf_counter() - start < seconds:",
             "    while len(times) < runs:",
             ("tests/export/test_verified.py::test_the_reported_latency_is_timed_long_enough",),
             "psp-export's latency from five calls of a 10 ms model: a spurious 'INT8 is not faster' warning"),
    Mutation("demo-bf16-never-converts", "experiments/demo.py", "    reason = bf16_reason()\n    if reason:",
             "    reason = bf16_reason()\n    if True:",
             ("tests/experiments/test_demo.py::"
              "test_the_bf16_step_converts_where_the_cpu_runs_bf16_and_says_why_not_elsewhere",),
             "the demo skipping bf16 on a CPU that runs it"),
]


@dataclass
class Outcome:
    mutation: Mutation
    caught: bool
    detail: str  # failing tests, or why nothing failed
    seconds: float


def copy_tree(destination: Path) -> None:
    """The working tree as git sees it (tracked and new files, not ignored ones) copied to `destination`."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    """pytest on `tests` inside `tree` (that tree first on the path); (exit code, output)."""
    import os

    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", *tests, "-q", "-rf", "-p", "no:cacheprovider", "-o",
               "addopts=", "--no-header"]
    try:
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s"
    return done.returncode, done.stdout + done.stderr


def failing_tests(output: str) -> list[str]:
    names = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.MULTILINE)
    return sorted({n.split("/")[-1] for n in names})


def apply(tree: Path, mutation: Mutation) -> str:
    """Write the mutated file into `tree`; returns the original text to restore."""
    path = tree / mutation.file
    text = path.read_text()
    count = text.count(mutation.original)
    if count != 1:
        raise click.ClickException(f"mutation {mutation.name}: its snippet occurs {count} times in "
                                   f"{mutation.file} (must be exactly once); update the entry")
    path.write_text(text.replace(mutation.original, mutation.mutated))
    return text


def audit(mutations: list[Mutation], timeout: float, log=print) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="psp-mutations-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        for mutation in mutations:  # every snippet must be found before minutes of testing
            apply(tree, mutation)
            (tree / mutation.file).write_text((ROOT / mutation.file).read_text())
        suites = sorted({t for m in mutations for t in m.tests})
        code, output = run_tests(tree, tuple(suites), timeout)
        if code != 0:
            raise click.ClickException(f"the unmutated tree fails its tests, so mutations prove nothing:\n"
                                       f"{output[-3000:]}")
        outcomes = []
        for mutation in mutations:
            original = apply(tree, mutation)
            start = time.perf_counter()
            try:
                code, output = run_tests(tree, mutation.tests, timeout)
            finally:
                (tree / mutation.file).write_text(original)
            outcomes.append(judge(mutation, code, output, time.perf_counter() - start))
            log(f"{'caught' if outcomes[-1].caught else 'MISSED':6s} {mutation.name}: {outcomes[-1].detail}")
        return outcomes


def judge(mutation: Mutation, code: int, output: str, seconds: float) -> Outcome:
    """Caught when tests fail (exit 1) or the run crashes on a signal; a collection error or a timeout is
    not a test catching the bug."""
    if code == 1:
        failed = failing_tests(output)
        shown = ", ".join(failed[:4]) + (f" (+{len(failed) - 4} more)" if len(failed) > 4 else "")
        return Outcome(mutation, True, shown or "tests failed", seconds)
    if code < 0:
        return Outcome(mutation, True, f"the test process crashed (signal {-code})", seconds)
    if code == 0:
        return Outcome(mutation, False, "all tests passed", seconds)
    return Outcome(mutation, False, f"pytest exit {code}: " + (output.strip().splitlines() or [""])[-1], seconds)


def markdown(outcomes: list[Outcome]) -> str:
    caught = sum(o.caught for o in outcomes)
    lines = ["# Mutation audit", "",
             "Each row breaks one snippet of the code on purpose (in a temporary copy of the tree) and runs the",
             "tests named there; a mutation is *caught* when those tests fail. The unmutated tree passes the same",
             "tests first. Written by `python -m experiments.mutations`; rerun it after changing the code or the",
             "tests, and add new entries to `MUTATIONS` in experiments/mutations.py.", "",
             f"{caught} of {len(outcomes)} mutations caught.", "",
             "| mutation | stands for | file | tests run | result | failing tests |",
             "|---|---|---|---|---|---|"]
    for o in outcomes:
        m = o.mutation
        lines.append(f"| {m.name} | {m.stands_for} | {m.file} | {', '.join(m.tests)} | "
                     f"{'caught' if o.caught else '**missed**'} | {o.detail} |")
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--only", multiple=True, help="Run only the mutation(s) with this name (repeatable).")
@click.option("--list", "list_only", is_flag=True, help="List the mutations and exit.")
@click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds per test run.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=ROOT / "docs/testing.md",
              show_default=True, help="Markdown result table.")
def main(only, list_only, timeout, output):
    """Break the code one mutation at a time and check that the tests catch each one."""
    names = [m.name for m in MUTATIONS]
    if len(set(names)) != len(names):
        raise click.ClickException("two mutations share a name")
    if list_only:
        for m in MUTATIONS:
            click.echo(f"{m.name}: {m.stands_for} ({m.file})")
        return
    unknown = set(only) - set(names)
    if unknown:
        raise click.BadParameter(f"unknown mutation(s): {', '.join(sorted(unknown))}", param_hint="--only")
    chosen = [m for m in MUTATIONS if not only or m.name in only]
    outcomes = audit(chosen, timeout, log=click.echo)
    from pspcore.files import atomic_output

    with atomic_output(output) as tmp:
        tmp.write_text(markdown(outcomes))
    click.echo(f"wrote {output}: {sum(o.caught for o in outcomes)} of {len(outcomes)} caught")
    if not all(o.caught for o in outcomes):
        raise click.exceptions.Exit(1)


if __name__ == "__main__":
    main()
