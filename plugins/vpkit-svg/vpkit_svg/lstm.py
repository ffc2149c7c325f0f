"""SVG's recurrent networks: the frame predictor and the Gaussian LSTMs (posterior, learned prior).

Official `models/lstm.py`: a Linear embedding, a stack of `nn.LSTMCell`s, then a Linear(+tanh) output or two Linear
heads (mean, log-variance). Attribute names match the official classes so state-dict keys are identical
(`embed.*`, `lstm.{k}.weight_ih`, `output.0.*`, `mu_net.*`, `logvar_net.*`).

Unlike the official modules, the recurrent state is explicit (`(h, c)`, each `[layers, B, hidden]`), never a module
attribute. Two ways to run the same cells:
- `forward(inputs [B, T, in], state)`: a whole teacher-forced sequence with PyTorch's fused multi-layer LSTM op on
  the cells' own weights (one call instead of a Python loop over time and layers) -- used for training;
- `step(input [B, in], state)`: one time step in plain tensor ops -- used by the exportable sampling graphs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = tuple[Tensor, Tensor]


@contextmanager
def _native_cpu_kernel(device: torch.device) -> Iterator[None]:
    """Run the fused LSTM with PyTorch's native CPU kernel instead of oneDNN's. oneDNN spreads each tiny time step
    over every OpenMP thread and stalls at each barrier when the cores are shared: measured here at batch 16,
    hidden 256, 2 threads, 0.5 s forward + 0.9 s backward against 13 ms + 21 ms for the native kernel."""
    if device.type != "cpu":
        yield
        return
    enabled = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(enabled)


class _StackedCells(nn.Module):
    """Embedding + `n_layers` LSTMCells of width `hidden_size` (shared by both official classes)."""

    def __init__(self, input_size: int, hidden_size: int, n_layers: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        self.embed = nn.Linear(input_size, hidden_size)
        self.lstm = nn.ModuleList([nn.LSTMCell(hidden_size, hidden_size) for _ in range(n_layers)])

    def init_state(self, batch: int, *, device: torch.device | str, dtype: torch.dtype) -> State:
        """The zero state the official `init_hidden` makes."""
        shape = (self.n_layers, batch, self.hidden_size)
        return torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)

    def _run_sequence(self, inputs: Tensor, state: State | None) -> tuple[Tensor, State]:
        """Top-layer hidden states `[B, T, hidden]` for a whole input sequence `[B, T, input_size]`."""
        embedded = self.embed(inputs)
        if state is None:
            state = self.init_state(inputs.shape[0], device=inputs.device, dtype=embedded.dtype)
        params = [p for cell in self.lstm for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
        if params[0].dtype != embedded.dtype:  # under autocast the embedding is already in the reduced precision
            params = [p.to(embedded.dtype) for p in params]
        # nn.LSTMCell and the fused op share the gate layout (i, f, g, o) and the two-bias form, so this is the
        # official cell recurrence, run over all steps and layers in one call.
        with _native_cpu_kernel(embedded.device):
            top, h_n, c_n = torch.lstm(embedded, state, params, True, self.n_layers, 0.0, self.training, False, True)
        return top, (h_n, c_n)

    def _run_step(self, input: Tensor, state: State) -> tuple[Tensor, State]:
        """Top-layer hidden state `[B, hidden]` after one step on `input [B, input_size]`."""
        x = self.embed(input)
        hs, cs = [], []
        for layer, cell in enumerate(self.lstm):
            gates = F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(state[0][layer], cell.weight_hh,
                                                                         cell.bias_hh)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * state[1][layer] + torch.sigmoid(i) * torch.tanh(g)
            x = torch.sigmoid(o) * torch.tanh(c)
            hs.append(x)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))


class PredictorLSTM(_StackedCells):
    """The frame predictor: `[h_{t-1}, z_t] -> g_t` (official `lstm`; output Linear + tanh)."""

    def __init__(self, *, input_size: int, output_size: int, hidden_size: int, n_layers: int) -> None:
        super().__init__(input_size, hidden_size, n_layers)
        self.output_size = output_size
        self.output = nn.Sequential(nn.Linear(hidden_size, output_size), nn.Tanh())

    def forward(self, inputs: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Outputs `[B, T, output_size]` and the final state for a teacher-forced sequence `[B, T, input_size]`."""
        top, state = self._run_sequence(inputs, state)
        return self.output(top), state

    def step(self, input: Tensor, state: State) -> tuple[Tensor, State]:
        """One step: output `[B, output_size]` and the new state."""
        top, state = self._run_step(input, state)
        return self.output(top), state


class GaussianLSTM(_StackedCells):
    """A diagonal-Gaussian recurrent network, `x_t -> N(mu_t, exp(logvar_t))` (official `gaussian_lstm`)."""

    def __init__(self, *, input_size: int, output_size: int, hidden_size: int, n_layers: int) -> None:
        super().__init__(input_size, hidden_size, n_layers)
        self.output_size = output_size
        self.mu_net = nn.Linear(hidden_size, output_size)
        self.logvar_net = nn.Linear(hidden_size, output_size)

    def forward(self, inputs: Tensor, state: State | None = None) -> tuple[Tensor, Tensor, State]:
        """`mu, logvar` `[B, T, output_size]` and the final state for a whole sequence `[B, T, input_size]`."""
        top, state = self._run_sequence(inputs, state)
        return self.mu_net(top), self.logvar_net(top), state

    def step(self, input: Tensor, state: State, noise: Tensor) -> tuple[Tensor, Tensor, Tensor, State]:
        """One step: `z = mu + exp(logvar / 2) * noise`, `mu`, `logvar` and the new state."""
        top, state = self._run_step(input, state)
        mu, logvar = self.mu_net(top), self.logvar_net(top)
        return sample(mu, logvar, noise), mu, logvar, state


def sample(mu: Tensor, logvar: Tensor, noise: Tensor) -> Tensor:
    """The reparameterised sample the official `reparameterize` draws, with its standard-normal noise given."""
    return noise * torch.exp(0.5 * logvar) + mu
