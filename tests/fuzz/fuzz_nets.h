/* fuzz_nets.h - small networks for the weights target (fuzz_weights.c) and
 * its seed generator (fuzz_seeds.c): the real yolov3-tiny needs a 35 MB
 * weights file, far beyond what a fuzzer can mutate, so these keep its
 * layer kinds (batch-normalized and plain convolutions, maxpool, route,
 * upsample, yolo) at a few kilobytes of weights. */
#ifndef MPD_FUZZ_NETS_H
#define MPD_FUZZ_NETS_H

/* The default net: an input without a NUL is a weights file for this one. */
static const char fuzz_net_tiny[] = "[net]\n"
                                    "width=16\n"
                                    "height=16\n"
                                    "channels=3\n"
                                    "[convolutional]\n"
                                    "batch_normalize=1\n"
                                    "filters=4\n"
                                    "size=3\n"
                                    "stride=1\n"
                                    "pad=1\n"
                                    "activation=leaky\n"
                                    "[maxpool]\n"
                                    "size=2\n"
                                    "stride=2\n"
                                    "[convolutional]\n"
                                    "filters=8\n"
                                    "size=3\n"
                                    "pad=1\n"
                                    "activation=leaky\n"
                                    "[convolutional]\n"
                                    "filters=21\n"
                                    "size=1\n"
                                    "activation=linear\n"
                                    "[yolo]\n"
                                    "mask=0,1,2\n"
                                    "anchors=10,14, 23,27, 37,58\n"
                                    "classes=2\n"
                                    "num=3\n"
                                    "[route]\n"
                                    "layers=-3\n"
                                    "[upsample]\n"
                                    "stride=2\n"
                                    "[convolutional]\n"
                                    "batch_normalize=1\n"
                                    "filters=4\n"
                                    "size=3\n"
                                    "pad=1\n"
                                    "precision=int8\n"
                                    "activation=leaky\n";

/* A second shape, given as "cfg NUL weights": no batch-norm, a shortcut and
 * a strided convolution. */
static const char fuzz_net_plain[] = "[net]\n"
                                     "width=8\n"
                                     "height=8\n"
                                     "channels=1\n"
                                     "[convolutional]\n"
                                     "filters=2\n"
                                     "size=3\n"
                                     "stride=2\n"
                                     "pad=1\n"
                                     "activation=relu\n"
                                     "[convolutional]\n"
                                     "filters=2\n"
                                     "size=1\n"
                                     "activation=linear\n"
                                     "[shortcut]\n"
                                     "from=-2\n"
                                     "activation=linear\n";

#endif
