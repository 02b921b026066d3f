"""Seeds of the random streams a run keeps apart from the caller's own ``seed`` stream."""

_GOLDEN = 0x9E3779B1  # odd: the map below is one-to-one on 32 bits
DIFFUSION_NOISE = 0x7F4A7C15
DIP_INPUT_NOISE = 0x2545F491
EXTRA_SAMPLES = 0x6C8E9CF5  # sample j > 0 of an image: stream EXTRA_SAMPLES + 2 j (odd)
GREY_NOISE = 0x3C6EF373  # the noise that whitens a grey observation (pipeline.grey)
ADAPT = 0x1B873593  # LoRA initialisation and recorruptions of the prior's adaptation
ADAPT_PROBE = 0x5BD1E995  # the recorruptions that estimate an adaptation's gain


def stream_seed(seed: int, stream: int) -> int:
    """The seed of ``stream`` (an odd constant above) for the caller's ``seed``.

    Seeding a stream with ``seed`` itself would repeat, value for value, whatever the caller drew
    from ``torch.Generator().manual_seed(seed)`` (a degradation, say).  The map is odd-affine on
    32 bits, as the CPU generator (mt19937) keeps only a seed's low 32 bits (``seed + 2**32`` is
    the same stream): one-to-one, never ``seed`` itself (``(a - 1) seed`` is even, ``stream``
    odd), and two streams differ for the same ``seed``.
    """
    return (int(seed) * _GOLDEN + stream) % 2**32
