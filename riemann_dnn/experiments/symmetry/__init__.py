r"""The paper's §2 made visible: the filter-rescaling symmetry of a batch-normalised network.

For a weight :math:`W_k` that feeds a BatchNorm (train mode, batch statistics, ``eps -> 0``)
the loss is invariant to the reparameterisation of eq. (1),
:math:`\tilde W_k = \operatorname{Diag}(\alpha^{(k)}) W_k` with :math:`\alpha^{(k)}_i > 0`.
Consequences, each measured by :func:`invariance_report`:

(a) :math:`L(\tilde W) = L(W)`;
(b) the Euclidean gradient of filter :math:`i` scales as :math:`1/\alpha_i`:
    :math:`\nabla_{\tilde w_i} L = \nabla_{w_i} L / \alpha_i` -- so Euclidean SGD is not
    invariant (a filter made 10x smaller gets a 100x larger relative step);
(c) the UN (Riemannian) gradient is invariant: at the unit-norm representative
    :math:`\hat w_i = w_i/\|w_i\|` it is :math:`\Pi_{\hat w_i}(\|w_i\| \nabla_{w_i} L)`
    (homogeneity of degree -1 gives :math:`\nabla L(\hat w_i) = \|w_i\| \nabla L(w_i)`),
    the same from :math:`W` and from :math:`\tilde W`; hence one UN step (Table 1) lands on the
    same weights from either parameterisation;
(d) one Euclidean step does not: the normalised filters after it differ.

PyTorch's BatchNorm divides by :math:`\sqrt{\sigma^2 + \epsilon}` (``eps = 1e-5``), which breaks
(a)-(b) by about :math:`\epsilon / (2\alpha_i^2 \sigma_i^2)` (relative); the report is made for ``eps`` =
:data:`EXACT_EPS` (the exact symmetry) and for the network's own ``eps``.

:func:`trajectories` trains Euclidean SGD (B-SGD) and UN from ``copies`` rescaled copies of
one network on the same minibatches: the B-SGD copies drift apart, the UN copies coincide up
to rounding. :func:`run_symmetry` does both on real MNIST and :func:`write_report` writes
``symmetry.json``, ``symmetry.md`` and ``symmetry.png``.

One idea per module: :mod:`.rescaling` (the symmetry: factors, rescaled copies, BatchNorm
``eps``, loss and gradients), :mod:`.updates` (the UN and B-SGD updates), :mod:`.invariance`
((a)-(d) on one batch), :mod:`.trajectories` (training from rescaled copies),
:mod:`.pipeline` (both on MNIST), :mod:`.report` and :mod:`.plots` (the files);
:mod:`.model`, any model's symmetries weight by weight (``riemann-dnn symmetry --model``).
"""

from __future__ import annotations

from .invariance import invariance_report
from .model import explain_model, load_factory, write_explanation
from .pipeline import run_symmetry
from .plots import plot_symmetry
from .report import write_report
from .rescaling import (
    EXACT_EPS,
    loss_and_gradients,
    random_filter_scales,
    rescale_filters,
    set_batchnorm_eps,
    unit_filters,
)
from .trajectories import trajectories
from .updates import riemannian_gradient_at_unit_filters, un_step_from_gradient

__all__ = [
    "random_filter_scales",
    "rescale_filters",
    "EXACT_EPS",
    "set_batchnorm_eps",
    "loss_and_gradients",
    "unit_filters",
    "riemannian_gradient_at_unit_filters",
    "un_step_from_gradient",
    "invariance_report",
    "trajectories",
    "run_symmetry",
    "write_report",
    "plot_symmetry",
    "load_factory",
    "explain_model",
    "write_explanation",
]
