"""Write tests/golden/<codec>.json: a few bitstreams of a shipped learned codec and their content
hashes. Run once when weights are registered (``python tests/make_goldens.py msh-n96``); the
JSON is committed and ``test_shipped_goldens`` decodes it bit-exact in CI from then on, so a
later change that breaks old archives fails."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from conftest import synthetic_image  # noqa: E402

from models.registry import get_codec  # noqa: E402

CASES = [(0, 64, 128, 1.0), (1, 128, 96, 4.0), (2, 96, 96, 7.0), (3, 70, 50, 2.5)]


def main(codec_id: str) -> None:
    cases, image = CASES, synthetic_image
    if codec_id == "gan-latent":  # faces the generator can represent, made from a seed
        from test_gan_latent import CASES as cases
        from test_gan_latent import generator_face as image
    streams = []
    for seed, h, w, quality in cases:
        codec = get_codec(codec_id, quality)
        stream = codec.encode_batch([image(seed, h, w)])[0]
        decoded = codec.decode_batch([stream])[0]
        streams.append({"seed": seed, "shape": [h, w], "quality": quality, "stream": stream.hex(),
                        "content_hash": decoded.content_hash.hex()})
    out = {"codec": codec_id, "weights_sha256": codec.weights_sha256(), "streams": streams}
    path = Path(__file__).parent / "golden" / f"{codec_id}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
