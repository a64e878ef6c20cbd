rule qc_dataset:
    """QC figures and summary of a crystal sweep (peaks, mask, frames)."""
    input:
        script=script("plot_qc"),
        geom=rules.import_geometry.output[0],
        data=rules.import_data.output[0],
        peaks=rules.find_peaks.output[0],
        mask=rules.mask_peaks.output[0],
        background=lambda wc: (
            f"{RESULTS}/{DATASETS[wc.dataset]['background']}/bkg_data_binned.nxs"
            if DATASETS[wc.dataset].get("background")
            else []
        ),
    output:
        **qc_outputs("dataset", QC_CRYSTAL_FIGURES),
    log:
        "logs/qc_dataset/{dataset}.log",
    conda:
        "../../envs/diffuseflow.yaml"
    resources:
        mem_mb=3000,
        runtime=15,
    params:
        sweep=lambda wc: f"{RESULTS}/{wc.dataset}",
        outdir=lambda wc: f"{RESULTS}/{wc.dataset}/qc",
        background=lambda wc, input: (
            f"--background {shlex.quote(input.background)}" if input.background else ""
        ),
    shell:
        "python {input.script:q} {params.sweep:q} -o {params.outdir:q} "
        "{params.background} --benchmarks benchmarks > {log:q} 2>&1"


rule qc_background:
    """QC figures and summary of a background sweep (binned background, radial profile)."""
    input:
        script=script("plot_qc"),
        data=rules.import_background.output[0],
        binned=rules.bin_background.output[0],
    output:
        **qc_outputs("background", QC_BACKGROUND_FIGURES),
    log:
        "logs/qc_background/{background}.log",
    conda:
        "../../envs/diffuseflow.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        sweep=lambda wc: f"{RESULTS}/{wc.background}",
        outdir=lambda wc: f"{RESULTS}/{wc.background}/qc",
    shell:
        "python {input.script:q} {params.sweep:q} -o {params.outdir:q} "
        "--benchmarks benchmarks > {log:q} 2>&1"


rule qc_map:
    """QC figures and summary of a diffuse map (sections, isotropic average, CC1/2,
    multiplicity)."""
    input:
        script=script("plot_map_qc"),
        merged=rules.merge.output[0],
        map=rules.map.output[0],
    output:
        **qc_outputs("map", QC_MAP_FIGURES, folder=f"{RESULTS}/maps/{{map}}"),
    log:
        "logs/qc_map/{map}.log",
    conda:
        "../../envs/diffuseflow.yaml"
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        outdir=lambda wc: f"{RESULTS}/maps/{wc.map}/qc",
    shell:
        "python {input.script:q} {input.merged:q} {input.map:q} -o {params.outdir:q} "
        "> {log:q} 2>&1"


rule qc_scale:
    """QC figures and summary of a map's scaling (the fitted factors, CC1/2 and Friedel-pair
    correlation before and after, each sweep against the merged map)."""
    input:
        script=script("plot_scale_qc"),
        corrected=lambda wc: [
            f"{RESULTS}/{ds}/corrected.nxs" for ds in map_datasets(wc.map)
        ],
        scales=rules.scale.output[0],
        geom=lambda wc: f"{RESULTS}/{map_datasets(wc.map)[0]}/geometry.nxs",
    output:
        **qc_outputs("map", QC_SCALE_FIGURES, folder=f"{RESULTS}/maps/{{map}}/scaling"),
    log:
        "logs/qc_scale/{map}.log",
    conda:
        "../../envs/diffuseflow.yaml"
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        outdir=lambda wc: f"{RESULTS}/maps/{wc.map}/scaling/qc",
        scales=lambda wc, input: " ".join(
            shlex.quote(f"{input.scales}/{ds}.nxs") for ds in map_datasets(wc.map)
        ),
        names=lambda wc: " ".join(map_datasets(wc.map)),
    shell:
        "python {input.script:q} {input.corrected:q} --scale {params.scales} "
        "--geometry {input.geom:q} --names {params.names} -o {params.outdir:q} > {log:q} 2>&1"
