"""Extra checks: a 4K frame through the ensemble (python-backend shm growth), an output shm region that is
too small (error text), a request before/after."""
import sys, time
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException
sys.path.insert(0, "/tmp/triton-proto/pylib")
import onnxruntime as ort
import psp_prepost as pp

sess = ort.InferenceSession("/tmp/triton-proto/repo/pspnet_model/1/model.onnx", providers=["CPUExecutionProvider"])
g = grpcclient.InferenceServerClient("127.0.0.1:18001")
big = np.random.default_rng(1).integers(0, 256, (2160, 3840, 3), dtype=np.uint8)
i = grpcclient.InferInput("image", list(big.shape), "UINT8"); i.set_data_from_numpy(big)
t = time.perf_counter(); out = g.infer("pspnet", [i]).as_numpy("labels"); dt = time.perf_counter() - t
x, box = pp.preprocess_rgb(big, (65, 65))
print("4K via grpc:", out.shape, "equal", np.array_equal(out, pp.postprocess(sess.run(["logits"], {"image": x})[0], box)), f"{dt*1e3:.0f} ms")
for mod, url in ((httpclient, "127.0.0.1:18000"), (grpcclient, "127.0.0.1:18001")):
    c = mod.InferenceServerClient(url)
    img = np.zeros((100, 100, 3), np.uint8)
    hi = shm.create_shared_memory_region("x_in", "/x_in", img.nbytes)
    ho = shm.create_shared_memory_region("x_out", "/x_out", 100)
    shm.set_shared_memory_region(hi, [img])
    c.register_system_shared_memory("x_in", "/x_in", img.nbytes)
    c.register_system_shared_memory("x_out", "/x_out", 100)
    inp = mod.InferInput("image", list(img.shape), "UINT8"); inp.set_shared_memory("x_in", img.nbytes)
    o = mod.InferRequestedOutput("labels"); o.set_shared_memory("x_out", 100)
    try:
        c.infer("pspnet", [inp], outputs=[o]); print(mod.__name__, "small out region: NO ERROR")
    except InferenceServerException as e:
        print(mod.__name__, "small out region:", e.status(), repr(e.message()))
    try:  # region name never registered
        inp2 = mod.InferInput("image", list(img.shape), "UINT8"); inp2.set_shared_memory("nope", img.nbytes)
        c.infer("pspnet", [inp2]); print("unregistered: NO ERROR")
    except InferenceServerException as e:
        print(mod.__name__, "unregistered region:", e.status(), repr(e.message()))
    c.unregister_system_shared_memory("x_in"); c.unregister_system_shared_memory("x_out")
    shm.destroy_shared_memory_region(hi); shm.destroy_shared_memory_region(ho)
print("ready after:", g.is_server_ready())
