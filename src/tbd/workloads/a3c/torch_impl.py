"""A3C in PyTorch: persistent actor processes, Hogwild updates on the CPU, a GPU learner on CUDA.

`tbd run a3c --flavor tiny` exercises it; the design (what one step is, where the GPU comes in) is
in `spec.py`. Actors are started from a 'forkserver' (no inherited OpenMP or CUDA state, which is
what makes a plain fork unsafe once torch has run) when the run is built, and stopped by the
session's close.
Each actor uses one CPU thread: A3C's parallelism is across actors, not inside one.
"""

from __future__ import annotations

import os
import queue
import time
import traceback

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from tbd.errors import UsageError
from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch.session import TorchTask
from tbd.workloads.a3c.spec import CONVS, HIDDEN, STACK, feature_size

RESULT_TIMEOUT_S = 300.0  # a round that takes longer than this means an actor hung


class Policy(nn.Module):
    """The small A3C network (Mnih et al. 2016): conv 16 8x8/4, conv 32 4x4/2, fc 256, two heads."""

    def __init__(self, num_actions: int):
        super().__init__()
        (c1, k1, s1), (c2, k2, s2) = CONVS
        self.conv1 = nn.Conv2d(STACK, c1, k1, s1)
        self.conv2 = nn.Conv2d(c1, c2, k2, s2)
        self.fc = nn.Linear(feature_size(), HIDDEN)
        self.pi = nn.Linear(HIDDEN, num_actions)
        self.v = nn.Linear(HIDDEN, 1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs (B, 4, 84, 84) uint8 -> logits (B, A), values (B,)."""
        x = F.relu(self.conv1(obs.float() / 255.0))
        x = F.relu(self.conv2(x))
        x = F.relu(self.fc(x.flatten(1)))
        return self.pi(x), self.v(x).squeeze(-1)


@torch.no_grad()
def rmsprop_update(params, grads, square_avgs, lr: float, decay: float, eps: float) -> None:
    """The A3C paper's RMSProp: g = decay g + (1 - decay) d^2; p -= lr d / sqrt(g + eps).
    Run by many actors on the same shared tensors without locks (Hogwild)."""
    for p, d, g in zip(params, grads, square_avgs):
        g.mul_(decay).addcmul_(d, d, value=1 - decay)
        p.addcdiv_(d, g.add(eps).sqrt_(), value=-lr)


class SharedRMSprop(torch.optim.Optimizer):
    """`rmsprop_update` as an optimizer, its statistics made up front so they can be shared."""

    def __init__(self, params, lr: float, decay: float, eps: float, square_avgs=None):
        super().__init__(params, dict(lr=lr, decay=decay, eps=eps))
        ps = self.param_groups[0]["params"]
        self.square_avgs = square_avgs if square_avgs is not None else [torch.zeros_like(p) for p in ps]
        for p, g in zip(ps, self.square_avgs):
            self.state[p]["square_avg"] = g

    def step(self, closure=None):
        group = self.param_groups[0]
        ps = [p for p in group["params"] if p.grad is not None]
        rmsprop_update(ps, [p.grad for p in ps], [self.state[p]["square_avg"] for p in ps], group["lr"], group["decay"], group["eps"])


def rollout_loss(model: Policy, hp: dict, obs: torch.Tensor, actions: list[int], returns: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The A3C loss of one rollout, summed over its steps: policy gradient with n-step advantages,
    value_coef x 0.5 x squared advantages, minus entropy_coef x entropy. Returns (loss, entropies)."""
    logits, values = model(obs)  # (T, A), (T,)
    log_probs = F.log_softmax(logits, -1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    advantages = torch.tensor(returns) - values
    chosen = log_probs.gather(1, torch.tensor(actions)[:, None]).squeeze(1)
    policy_loss = -(chosen * advantages.detach()).sum()
    value_loss = 0.5 * advantages.pow(2).sum()
    return policy_loss + hp["value_coef"] * value_loss - hp["entropy_coef"] * entropy.sum(), entropy


class Actor:
    """One A3C actor: its emulator, a local copy of the policy, and the A3C loss of a rollout.
    Runs inside a worker process, or in-process in tests."""

    def __init__(self, index: int, hp: dict, seed: int, shared_params: list[torch.Tensor]):
        from tbd.workloads.a3c.atari import AtariGame

        self.hp, self.index = hp, index
        self.game = AtariGame(hp["game"], hp["frameskip"], seed=seed * 1000 + index)
        if self.game.num_actions != hp["num_actions"]:
            raise UsageError(f"{hp['game']} has {self.game.num_actions} actions; set the hparam num_actions to {self.game.num_actions}")
        self.model = Policy(hp["num_actions"])
        self.shared = shared_params
        self.gen = torch.Generator().manual_seed(seed * 1000 + index)
        self.obs = torch.from_numpy(self.game.reset())

    def play(self) -> tuple[dict, torch.Tensor, list[int], list[float]]:
        """Play t_max steps with the newest shared weights: (accounting, observations (T, 4, 84, 84)
        uint8, actions, n-step returns). The loss is computed here (`rollout`) or by a learner."""
        hp, t_max = self.hp, self.hp["t_max"]
        with torch.no_grad():
            for p, s in zip(self.model.parameters(), self.shared):
                p.copy_(s)
        frames_before = self.game.frame_number
        obs, actions, rewards, dones, episodes = [], [], [], [], []
        with torch.no_grad():
            for _ in range(t_max):
                logits, _ = self.model(self.obs[None])
                action = int(torch.multinomial(F.softmax(logits[0], -1), 1, generator=self.gen))
                screen, reward, done, info = self.game.step(action)
                obs.append(self.obs)
                actions.append(action)
                rewards.append(reward)
                dones.append(done)
                if done:
                    episodes.append((info["episode_return"], info["episode_steps"]))
                    screen = self.game.reset()
                self.obs = torch.from_numpy(screen)
            # n-step returns bootstrap from the value of the state after the rollout.
            ret = float(self.model(self.obs[None])[1][0])
        emulator_frames = self.game.frame_number - frames_before
        returns = [0.0] * t_max
        for t in reversed(range(t_max)):
            ret = rewards[t] + hp["gamma"] * ret * (0.0 if dones[t] else 1.0)
            returns[t] = ret
        stats = {
            "actor": self.index, "agent_steps": t_max, "frames": t_max * hp["frameskip"], "emulator_frames": emulator_frames,
            "rewards": rewards, "dones": dones, "episodes": episodes, "partial_return": self.game.episode_return,
        }
        return stats, torch.stack(obs), actions, returns

    def rollout(self) -> dict:
        """Play t_max steps with the newest shared weights, leave the loss's gradients in
        self.model's .grad, return the rollout's accounting."""
        hp = self.hp
        stats, obs, actions, returns = self.play()
        self.model.zero_grad(set_to_none=True)
        loss, entropy = rollout_loss(self.model, hp, obs, actions, returns)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), hp["max_grad_norm"])
        return {**stats, "loss": loss.item(), "entropy": entropy.mean().item()}

    def grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self.model.parameters()]


def _alive(pid: int) -> bool:
    # Not os.getppid(): an actor's parent is the forkserver, not the run's process.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _worker(index, hp, seed, shared_params, square_avgs, slot, commands, results, parent_pid) -> None:
    """An actor process: on each 'go', one rollout and one update (Hogwild), or one gradient
    handed to the learner (slot: a flat tensor), or one rollout handed to a learner that computes
    the loss itself (slot: (observations, [actions; returns]) tensors). Exits on None, or when its
    parent is gone."""
    torch.set_num_threads(1)
    try:
        actor = Actor(index, hp, seed, shared_params)
    except Exception as exc:
        results.put((index, {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}))
        return
    while True:
        try:
            cmd = commands.get(timeout=5.0)
        except queue.Empty:
            if not _alive(parent_pid):  # the run's process is gone (killed): do not linger
                return
            continue
        if cmd is None:
            # Skip the interpreter's teardown of torch and the emulator (about a second): flush
            # what this process queued and leave; there is nothing else to save.
            actor.game.close()
            results.close()
            results.join_thread()
            os._exit(0)
        try:
            if isinstance(slot, tuple):  # the learner computes the loss (the JAX learner)
                stats, obs, actions, returns = actor.play()
                slot[0].copy_(obs)
                slot[1].copy_(torch.tensor([actions, returns], dtype=torch.float32))
            else:
                stats = actor.rollout()
                if square_avgs is not None:
                    rmsprop_update(shared_params, actor.grads(), square_avgs, hp["lr"], hp["rms_decay"], hp["rms_eps"])
                else:
                    torch.cat([g.flatten() for g in actor.grads()], out=slot)
            results.put((index, stats))
        except Exception as exc:
            results.put((index, {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}))


class ActorPool:
    """N persistent actor processes; `round(on_result)` has each do one rollout and update (or
    hand its gradient or its rollout to a learner through `slots[i]`: see `_worker`)."""

    def __init__(self, n: int, hp: dict, seed: int, shared_params, square_avgs=None, slots=None):
        # forkserver: a clean server process (it has imported this module, and so torch, but run
        # nothing: no OpenMP pool, no CUDA context, which is what makes a plain fork unsafe) forks
        # each actor, so actors start fast and later pools in this process reuse the server.
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        self.results = ctx.Queue()
        self.commands = [ctx.Queue() for _ in range(n)]
        self.procs = []
        for i in range(n):
            args = (i, hp, seed, shared_params, square_avgs, None if slots is None else slots[i], self.commands[i], self.results, os.getpid())
            proc = ctx.Process(target=_worker, args=args, name=f"a3c-actor-{i}", daemon=True)
            proc.start()
            self.procs.append(proc)

    def round(self, on_result) -> None:
        for q in self.commands:
            q.put("go")
        for _ in self.procs:
            index, stats = self._next_result()
            if "error" in stats:
                raise RuntimeError(f"a3c actor {index} failed: {stats['error']}")
            on_result(index, stats)

    def _next_result(self):
        deadline = time.monotonic() + RESULT_TIMEOUT_S
        while True:
            try:
                return self.results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"a3c actor process {dead[0].name} died (exit code {dead[0].exitcode})") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no a3c actor reported within {RESULT_TIMEOUT_S:.0f} s") from None

    def close(self) -> None:
        for q, p in zip(self.commands, self.procs):
            if p.is_alive():
                q.put(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for q in (*self.commands, self.results):
            q.close()
            q.cancel_join_thread()


class Accounting:
    """Running totals of a run, published in the run's method under 'a3c'."""

    def __init__(self, n: int, hp: dict, device: str, learner: bool, role: str | None = None):
        self.n, self.hp = n, hp
        self.rounds = self.updates = self.agent_steps = self.frames = self.emulator_frames = 0
        self.round_s = 0.0
        self.returns: list[float] = []
        self.role = role or (f"learner on {device}: actors send gradients, the main process applies each as it arrives and publishes weights"
                             if learner else "Hogwild: actors update the shared-memory model and RMSProp statistics without locks")

    def add(self, stats: dict) -> None:
        self.updates += 1
        self.agent_steps += stats["agent_steps"]
        self.frames += stats["frames"]
        self.emulator_frames += stats["emulator_frames"]
        self.returns += [r for r, _ in stats["episodes"]]

    def summary(self) -> dict:
        last = self.returns[-10:]
        return {
            "actors": self.n, "t_max": self.hp["t_max"], "frameskip": self.hp["frameskip"],
            "updates_per_step": self.n, "frames_per_step": self.n * self.hp["t_max"] * self.hp["frameskip"],
            "rounds": self.rounds, "updates": self.updates, "agent_steps": self.agent_steps,
            "frames_nominal": self.frames, "frames_emulator": self.emulator_frames,
            "updates_per_s_all_rounds": self.updates / self.round_s if self.round_s else None,
            "episodes": len(self.returns), "mean_return_last_10": sum(last) / len(last) if last else None,
            "update_rule": self.role, "frames_definition": "agent steps x frameskip",
        }


def build(ctx: BuildContext) -> TorchTask:
    hp, n = ctx.hparams, ctx.batch_size
    if ctx.precision in ("bf16", "fp16"):
        raise UsageError(f"a3c's actors run in fp32 on the CPU; drop --precision {ctx.precision}")
    model = Policy(hp["num_actions"])
    rule = hp["update_rule"] if hp["update_rule"] != "auto" else ("hogwild" if ctx.device == "cpu" else "learner")
    if rule not in ("hogwild", "learner"):
        raise UsageError(f"a3c update_rule must be auto, hogwild or learner, got {rule!r}")
    if rule == "hogwild" and ctx.device != "cpu":
        raise UsageError("a3c's Hogwild updates need the shared model in CPU memory; use --device cpu or update_rule=learner")
    learner = rule == "learner"
    if learner:
        # The session moves `model` to the GPU; actors read weights from this CPU copy.
        shared = [p.detach().clone().share_memory_() for p in model.parameters()]
        square_avgs = None
        slots = torch.zeros(n, sum(p.numel() for p in shared)).share_memory_()
    else:
        model.share_memory()
        shared = [p.detach() for p in model.parameters()]  # the same storage as the model's
        square_avgs = [torch.zeros_like(p).share_memory_() for p in shared]
        slots = None
    pool = ActorPool(n, dict(hp), ctx.seed, shared, square_avgs, slots)
    acct = Accounting(n, hp, ctx.device, learner)

    def make_optimizer(m):
        return SharedRMSprop(m.parameters(), hp["lr"], hp["rms_decay"], hp["rms_eps"], square_avgs=None if learner else square_avgs)

    def train_step(session, batch) -> torch.Tensor:
        if session.config.compile:
            raise UsageError("a3c's actors run eager on the CPU; drop --compile")
        losses = []
        params = list(session.model.parameters())

        def on_result(index: int, stats: dict) -> None:
            if learner:  # apply this actor's gradient on the GPU, then publish the weights
                flat = slots[index].to(session.device, non_blocking=False)
                for p, g in zip(params, flat.split([p.numel() for p in params])):
                    p.grad = g.view_as(p)
                session.optimizer.step()
                with torch.no_grad():
                    for s, p in zip(shared, params):
                        s.copy_(p)
            losses.append(stats["loss"])
            acct.add(stats)

        t0 = time.perf_counter()
        pool.round(on_result)
        acct.round_s += time.perf_counter() - t0
        acct.rounds += 1
        session.info.method["a3c"] = acct.summary()
        return torch.tensor(sum(losses) / len(losses))

    frames = float(n * hp["t_max"] * hp["frameskip"])
    return TorchTask(
        model=model,
        make_optimizer=make_optimizer,
        make_batch=lambda gen, device: (torch.zeros(1, device=device),),  # data come from the emulators
        loss=lambda m, b: torch.zeros(()),  # unused: train_step replaces the whole step
        units=lambda batch: frames,
        samples=lambda batch: float(n * hp["t_max"]),
        train_step=train_step,
        extra={"pool": pool, "accounting": acct},
        close=pool.close,
    )
