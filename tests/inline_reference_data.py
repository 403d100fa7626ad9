"""Small inline excerpts of the public reference data in ../shared/data (see its README.md),
for tests that run on a clean checkout where that folder is absent. Each excerpt is a handful of
rows copied verbatim from the named file (trimmed where said), in that file's own format; the
tests that read the full files stay in the other test modules and skip without them.
"""

from __future__ import annotations

# lut/proxylessnas_pixel1_mobile_trim.yaml: its first 12 entries (of 72), verbatim. Keys are the
# ops of the ProxylessNAS space at 224x224; values count, mean (ms), var (Pixel 1, TFLite).
PROXYLESS_YAML_HEAD = """\
Conv-input:224x224x3-output:112x112x32:
  count: 949
  mean: 4.397037934668071
  var: 0.1562765530967112
Conv_1-input:7x7x320-output:7x7x1280:
  count: 949
  mean: 6.28499578503688
  var: 0.43429750694010927
Logits-input:7x7x1280-output:1000:
  count: 949
  mean: 0.9348261327713382
  var: 0.1500926595152672
expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:3-stride:2-idskip:0:
  count: 156
  mean: 5.608820512820512
  var: 0.08784284387615103
expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:5-stride:2-idskip:0:
  count: 154
  mean: 6.978000000000001
  var: 0.09233606040950651
expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:7-stride:2-idskip:0:
  count: 155
  mean: 8.544238709677419
  var: 0.09843537810589838
expanded_conv-input:112x112x16-output:56x56x24-expand:6-kernel:3-stride:2-idskip:0:
  count: 168
  mean: 11.297755952380951
  var: 0.12271979780823049
expanded_conv-input:112x112x16-output:56x56x24-expand:6-kernel:5-stride:2-idskip:0:
  count: 159
  mean: 13.576893081761007
  var: 0.15319226178771173
expanded_conv-input:112x112x16-output:56x56x24-expand:6-kernel:7-stride:2-idskip:0:
  count: 157
  mean: 16.887745222929933
  var: 0.1563649945536584
expanded_conv-input:112x112x32-output:112x112x16-expand:1-kernel:3-stride:1-idskip:0:
  count: 310
  mean: 4.035709677419355
  var: 0.07046224958106981
expanded_conv-input:112x112x32-output:112x112x16-expand:1-kernel:5-stride:1-idskip:0:
  count: 325
  mean: 6.9890061538461525
  var: 0.0988076606761036
expanded_conv-input:112x112x32-output:112x112x16-expand:1-kernel:7-stride:1-idskip:0:
  count: 314
  mean: 11.216767515923568
  var: 0.1767137923946283
"""

# lut/fbnet_cifar10_raspi4_lookup_table_pi.json: 28 entries, null at 0, 1, 24, 25, 26, 27 (fixed
# layers); its entries 2 and 3 (searchable layers 0 and 1), in MICROSECONDS, verbatim. Layer 0
# allows all 9 HW-NAS-Bench ops (the last is skip), layer 1 (a width change) the 8 without skip.
FBNET_JSON_NULLS = (0, 1, 24, 25, 26, 27)
FBNET_JSON_ENTRY_2 = [
    10430.441020034777, 17413.830099985717, 13205.984060032279, 15640.507280058957,
    11484.711359980793, 18686.343240005954, 15861.086960048853, 17488.50061999292,
    232.33408000123745,
]
FBNET_JSON_ENTRY_3 = [
    9378.480500008664, 16170.966339986988, 10630.15132003784, 12392.997040033151,
    9651.910100028545, 16253.710979981406, 11205.76498000446, 13647.001440003805,
]

# latency/fbnet_latency_help.csv: its first 5 rows (of 5,000), the op-index, ops_str and two of the
# 27 device columns (pixel3_ms, raspi4_ms), verbatim.
HELP_FBNET_CSV = """\
sample_idx,L00,L01,L02,L03,L04,L05,L06,L07,L08,L09,L10,L11,L12,L13,L14,L15,L16,L17,L18,L19,L20,L21,ops_str,pixel3_ms,raspi4_ms
0,7,8,1,8,4,8,8,8,7,4,1,4,7,3,2,7,3,2,4,2,4,5,k5_e6-skip-k3_e1_g2-skip-k5_e1-skip-skip-skip-k5_e6-k5_e1-k3_e1_g2-k5_e1-k5_e6-k3_e6-k3_e3-k5_e6-k3_e6-k3_e3-k5_e1-k3_e3-k5_e1-k5_e1_g2,17.55774545,30.252860404143576
1,5,3,5,5,0,4,7,5,5,2,0,2,4,5,1,3,7,2,6,0,4,0,k5_e1_g2-k3_e6-k5_e1_g2-k5_e1_g2-k3_e1-k5_e1-k5_e6-k5_e1_g2-k5_e1_g2-k3_e3-k3_e1-k3_e3-k5_e1-k5_e1_g2-k3_e1_g2-k3_e6-k5_e6-k3_e3-k5_e3-k3_e1-k5_e1-k3_e1,17.134481900000004,31.175647668977035
2,8,2,1,5,1,8,4,6,6,2,5,2,5,1,2,5,2,8,2,3,5,0,skip-k3_e3-k3_e1_g2-k5_e1_g2-k3_e1_g2-skip-k5_e1-k5_e3-k5_e3-k3_e3-k5_e1_g2-k3_e3-k5_e1_g2-k3_e1_g2-k3_e3-k5_e1_g2-k3_e3-skip-k3_e3-k3_e6-k5_e1_g2-k3_e1,13.140254879999999,26.191526238049846
3,4,8,0,8,5,5,1,0,2,7,7,4,7,3,0,5,6,5,6,1,2,0,k5_e1-skip-k3_e1-skip-k5_e1_g2-k5_e1_g2-k3_e1_g2-k3_e1-k3_e3-k5_e6-k5_e6-k5_e1-k5_e6-k3_e6-k3_e1-k5_e1_g2-k5_e3-k5_e1_g2-k5_e3-k3_e1_g2-k3_e3-k3_e1,13.371646489999998,24.79738116610679
4,6,8,4,3,7,4,8,3,7,1,3,2,5,8,8,0,1,0,4,0,8,2,k5_e3-skip-k5_e1-k3_e6-k5_e6-k5_e1-skip-k3_e6-k5_e6-k3_e1_g2-k3_e6-k3_e3-k5_e1_g2-skip-skip-k3_e1-k3_e1_g2-k3_e1-k5_e1-k3_e1-skip-k3_e3,17.492955474000002,33.69284613907803
"""  # noqa: E501

# latency/nb201_latency_help.csv: arch_idx, arch_str and the 6 edge columns of 6 of its 15,625
# rows (row i is NAS-Bench-201 index i), verbatim, with raspi4_ms; accuracy/nats_bench.csv has the
# same ArchitectureString in its row i.
NB201_HELP_CSV = """\
arch_idx,arch_str,e1_from0,e2_from0,e2_from1,e3_from0,e3_from1,e3_from2,raspi4_ms
0,|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|,avg_pool_3x3,nor_conv_1x1,skip_connect,nor_conv_1x1,skip_connect,skip_connect,10.481976820010459
1,|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|,nor_conv_3x3,nor_conv_3x3,avg_pool_3x3,skip_connect,nor_conv_3x3,skip_connect,54.77739761998237
9,|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|,avg_pool_3x3,none,none,skip_connect,none,nor_conv_3x3,20.097734900045907
123,|avg_pool_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|,avg_pool_3x3,avg_pool_3x3,nor_conv_1x1,none,avg_pool_3x3,nor_conv_3x3,27.736908059960115
4567,|nor_conv_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|nor_conv_1x1~0|none~1|none~2|,nor_conv_3x3,avg_pool_3x3,skip_connect,nor_conv_1x1,none,none,5.206001180049498
15624,|nor_conv_1x1~0|+|none~0|nor_conv_1x1~1|+|none~0|nor_conv_1x1~1|nor_conv_1x1~2|,nor_conv_1x1,none,nor_conv_1x1,none,nor_conv_1x1,nor_conv_1x1,18.01667137988261
"""  # noqa: E501

# tool_outputs/tflite_benchmark_model/meta-tensorflow-lite_qemuriscv64_mobilenet_v1_4threads.txt
# (tab-separated, with a [start] column), trimmed: its header and timing lines, the
# initialisation profile's Run Order and Timings line, 6 of the regular runs' 31 Run Order rows
# (the first two and the last four), one "Top by Computation Time" row (an op not among the 6),
# and the regular runs' Timings line, all verbatim.
TFLITE_NEW_LOG = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [./mobilenet_v1_1.0_224.tflite]
Enable op profiling: [1]
#threads used for CPU inference: [4]
Loaded model ./mobilenet_v1_1.0_224.tflite
The input model file size (MB): 16.9008
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t         AllocateTensors\t            0.000\t    1.356\t    1.356\t100.000%\t100.000%\t     0.000\t        1\tAllocateTensors/0

Timings (microseconds): count=1 curr=1356
Memory (bytes): count=0
1 nodes observed


Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                 CONV_2D\t            0.066\t   87.754\t   60.957\t  2.066%\t  2.066%\t     0.000\t        1\t[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0
\t       DEPTHWISE_CONV_2D\t           61.033\t   53.628\t   49.870\t  1.691%\t  3.757%\t     0.000\t        1\t[MobilenetV1/MobilenetV1/Conv2d_1_depthwise/Relu6]:1
\t         AVERAGE_POOL_2D\t         2936.930\t    0.828\t    0.869\t  0.029%\t 99.578%\t     0.000\t        1\t[MobilenetV1/Logits/AvgPool_1a/AvgPool]:27
\t                 CONV_2D\t         2937.801\t   11.354\t   12.185\t  0.413%\t 99.992%\t     0.000\t        1\t[MobilenetV1/Logits/Conv2d_1c_1x1/BiasAdd]:28
\t                 SQUEEZE\t         2949.993\t    0.013\t    0.017\t  0.001%\t 99.992%\t     0.000\t        1\t[MobilenetV1/Logits/SpatialSqueeze]:29
\t                 SOFTMAX\t         2950.011\t    0.230\t    0.233\t  0.008%\t100.000%\t     0.000\t        1\t[MobilenetV1/Predictions/Reshape_1]:30

============================== Top by Computation Time ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                 CONV_2D\t          898.426\t  263.724\t  277.374\t  9.403%\t  9.403%\t     0.000\t        1\t[MobilenetV1/MobilenetV1/Conv2d_5_pointwise/Relu6]:10

Timings (microseconds): count=50 first=2989660 curr=2912978 min=2727203 max=3189476 avg=2.9499e+06 std=109770
Memory (bytes): count=0
"""  # noqa: E501

# tool_outputs/tflite_benchmark_model/proxylessnas_mobile_pixel1_mnasnet_like_oldformat.txt
# (2018, space-aligned), trimmed the same way: header, loops, 7 of its 77 Run Order rows, one
# "Top by" row, the Timings line and the closing "Average inference timings" line, verbatim
# (but for the trailing space of the two "Running benchmark" lines).
TFLITE_OLD_LOG = """\
STARTING!
Num runs: [100]
Inter-run delay (seconds): [-1]
Num threads: [1]
Benchmark name: []
Output prefix: []
Warmup runs: [10]
Graph: [/data/local/tmp/model.tflite]
Input layers: [input]
Input shapes: [1,224,224,3]
Use nnapi : [0]
Loaded model /data/local/tmp/model.tflite
resolved reporter
Initialized session in 47.967ms
Running benchmark for 10 iterations
count=10 first=101052 curr=81956 min=79700 max=101052 avg=83496.6 std=5957

Running benchmark for 100 iterations
count=100 first=80068 curr=81025 min=79589 max=83607 avg=80670.2 std=871

============================== Run Order ==============================
                     [node type]          [start]         [first]        [avg ms]            [%]          [cdf%]          [mem KB]      [times called]  [Name]
                         CONV_2D            0.000           3.100           3.246         4.026%          4.026%             0.000              1       [MNasNet/Conv/Relu6]
               DEPTHWISE_CONV_2D            3.247           2.229           2.265         2.809%          6.835%             0.000              1       [MNasNet/expanded_conv/up_1-ks_3-st_1-id_0/depthwise/Relu6]
                             ADD           18.903           0.074           0.076         0.094%         23.528%             0.000              1       [MNasNet/expanded_conv_2/up_3-ks_3-st_1-id_1/add]
                         CONV_2D           74.410           4.541           4.738         5.875%         98.118%             0.000              1       [MNasNet/Conv_1/Relu6]
                 AVERAGE_POOL_2D           79.149           0.036           0.037         0.046%         98.164%             0.000              1       [MNasNet/Logits/AvgPool]
                         CONV_2D           79.186           1.336           1.479         1.834%         99.998%             0.000              1       [MNasNet/Logits/Conv2d_1c_1x1/BiasAdd]
                         RESHAPE           80.665           0.002           0.002         0.002%        100.000%             0.000              1       [MNasNet/Logits/output]

============================== Top by Computation Time ==============================
                     [node type]          [start]         [first]        [avg ms]            [%]          [cdf%]          [mem KB]      [times called]  [Name]
                         CONV_2D           74.410           4.541           4.738         5.875%          5.875%             0.000              1       [MNasNet/Conv_1/Relu6]

Timings (microseconds): count=100 first=80041 curr=80987 min=79554 max=83563 avg=80635.7 std=870
Memory (bytes): count=0


Average inference timings in us: Warmup: 83496.6, Init: 47967, no stats: 80670.2
"""  # noqa: E501
