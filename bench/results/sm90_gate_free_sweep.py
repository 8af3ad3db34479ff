"""The launch-config sweep behind sm90_gate_free_miscompile.md, as it ran (commit 9582750, before the
workaround: generated.deltanet then held the gate-free specialization; today it runs the scalar-decay
code, so this no longer fails). Each spec's chunk_state_bwd at K = 64/128/256 and 7 launch configs
against the same call with TF32 operands; a child process per (spec, K) restarts after a fault.

    python3 bench/results/sm90_gate_free_sweep.py deltanet     (likewise gated_deltanet, kda)
"""
import sys, traceback, importlib, torch, triton
import torch.nn.functional as F
M = lambda p: importlib.import_module("generated." + p)

def state_bwd(spec, q, k, v, g, beta, h0, do, dht, ip=None, cfg_over=None, BT=64):
    fw, bw, cm = (M(f"{spec}.triton_kernels.{m}") for m in ("chunk_fwd", "chunk_bwd", "common"))
    B, T, H, K = q.shape; V = v.shape[-1]; scale = K ** -0.5
    cu, ci, co, N, NT = cm.prepare_chunks(None, B, T, BT, q.device)
    ip0 = cm.dot_precision(q, k, v, do)
    lc = lambda n: cm.launch_config(n, q, K, V, T)
    g_cum = fw.chunk_cumsum(g, cu, ci, NT, BT) if g is not None else None
    w, u, Aqk, Tm, Gm = fw.chunk_intra_fwd(q, k, v, g_cum, beta, cu, ci, NT, BT, ip0, lc("chunk_intra_fwd"))
    hs, vnew, _ = fw.chunk_state_fwd(k, v, w, u, g_cum, h0, False, cu, co, N, NT, BT, ip0, lc("chunk_state_fwd"))
    BKS, NKS, _ = cm.state_scan_config(K, V)
    cfg = dict(lc("chunk_state_bwd"), **(cfg_over or {}))
    dhs = torch.empty_like(hs); dh0 = torch.empty(N, H, K, V, dtype=torch.float32, device=q.device)
    dvnew = torch.empty(B, T, H, V, dtype=torch.float32, device=q.device)
    bw.chunk_state_bwd_kernel[(triton.cdiv(V, cfg["BV"]), N * H)](
        q, k, w, g_cum if g_cum is not None else q, Aqk, do, dht, dhs, dh0, dvnew, cu, co, scale,
        H=H, K=K, V=V, BT=BT, BK=BKS, NK=NKS, HAS_DHT=True, HAS_H0=True, INPUT_PRECISION=ip or ip0, **cfg)
    torch.cuda.synchronize()
    return dict(dhs=dhs, dh0=dh0, dvnew=dvnew)

def err(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30)).item()

def inputs(B, T, H, K, dtype=torch.bfloat16):
    torch.manual_seed(0); dev = "cuda"
    q = F.normalize(torch.randn(B, T, H, K, device=dev), dim=-1).to(dtype)
    k = F.normalize(torch.randn(B, T, H, K, device=dev), dim=-1).to(dtype)
    v = torch.randn(B, T, H, K, device=dev).to(dtype)
    beta = torch.rand(B, T, H, device=dev)
    g = torch.zeros(B, T, H, device=dev)
    h0 = torch.randn(B, H, K, K, device=dev)
    do = torch.randn(B, T, H, K, device=dev).to(dtype); dht = torch.randn(B, H, K, K, device=dev)
    return q, k, v, g, beta, h0, do, dht

def child(spec, K, cfgs):
    q, k, v, g, beta, h0, do, dht = inputs(2, 1024, 4, K)
    if spec == "kda":
        g = torch.nn.functional.logsigmoid(torch.randn(2, 1024, 4, K, device="cuda")) / 8
    gg = None if spec == "deltanet" else g
    ref = state_bwd(spec, q, k, v, gg, beta, h0, do, dht, ip="tf32")
    for c in cfgs:
        BV, st, nw = c
        got = state_bwd(spec, q, k, v, gg, beta, h0, do, dht, cfg_over=dict(BV=BV, num_stages=st, num_warps=nw))
        e = max(err(got[n], ref[n]) for n in got)
        print(f"RESULT {spec} K={K} BV={BV} stages={st} warps={nw} err={e:.1e} {'ok' if e < 2e-2 else 'WRONG'}", flush=True)

if __name__ == "__main__":
    import subprocess, json
    if sys.argv[1] == "child":
        child(sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])); sys.exit(0)
    print(torch.cuda.get_device_name(), triton.__version__, flush=True)
    CFGS = [(16, 1, 4), (16, 2, 4), (32, 1, 4), (32, 2, 4), (64, 1, 4), (64, 2, 4), (32, 1, 8)]
    for spec in sys.argv[1].split(","):
        for K in (64, 128, 256):
            todo = list(CFGS)
            while todo:
                p = subprocess.run([sys.executable, __file__, "child", spec, str(K), json.dumps(todo)],
                                   capture_output=True, text=True, timeout=120)
                done = [l for l in p.stdout.splitlines() if l.startswith("RESULT")]
                print("\n".join(done), flush=True)
                todo = todo[len(done):]
                if p.returncode != 0 and todo:
                    print(f"RESULT {spec} K={K} BV={todo[0][0]} stages={todo[0][1]} warps={todo[0][2]} CRASH "
                          f"{(p.stderr.strip().splitlines() or [''])[-1][:90]}", flush=True)
                    todo = todo[1:]
