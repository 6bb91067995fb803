"""Every modality to tokens and back: video and audio autoencoders, text encoder, action vocabulary."""
