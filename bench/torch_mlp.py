"""PyTorch side of the end-to-end comparison: the paper's Figure-1 MLP (784-100-100-100-10,
sigmoid, batch 60, plain SGD), with and without BatchNorm1d, on random data of MNIST's shape.

python torch_mlp.py [--threads 2] [--steps 2000] -> one JSON line {"bn": steps/s, "no_bn": steps/s}
"""
import argparse, json, time
import torch

def model(bn):
    layers, width = [], 784
    for _ in range(3):
        layers.append(torch.nn.Linear(width, 100, bias=not bn))
        if bn:
            layers.append(torch.nn.BatchNorm1d(100))
        layers.append(torch.nn.Sigmoid())
        width = 100
    layers.append(torch.nn.Linear(width, 10))
    return torch.nn.Sequential(*layers)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2000)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.rand(a.steps % 100 + 100, 60, 784)
    y = torch.randint(0, 10, (x.shape[0], 60))
    out = {}
    for bn in (False, True):
        m = model(bn)
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        loss_fn = torch.nn.CrossEntropyLoss()
        def step(i):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(m(x[i % x.shape[0]]), y[i % x.shape[0]])
            loss.backward()
            opt.step()
        for i in range(50):
            step(i)
        t0 = time.perf_counter()
        for i in range(a.steps):
            step(i)
        out["bn" if bn else "no_bn"] = a.steps / (time.perf_counter() - t0)
    print(json.dumps(out))

if __name__ == "__main__":
    main()
